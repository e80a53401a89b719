"""`timm-shakedrop export CHECKPOINT --output DIR`: a training checkpoint to safetensors, config and model card."""
import argparse
import sys
from pathlib import Path

from timm_shakedrop.hub._cli import command_logging

__all__ = ['main']


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='timm-shakedrop export',
        description='Export a training checkpoint (timm train.py or timm-shakedrop train) to a folder with '
                    'model.safetensors, config.json in timm\'s Hub format and README.md (a model card), then '
                    'verify it by rebuilding the model with timm.create_model("local-dir:DIR", pretrained=True).',
    )
    parser.add_argument('checkpoint', help='training checkpoint (.pth.tar), bare state dict or .safetensors file')
    parser.add_argument('--output', '-o', required=True, metavar='DIR', help='folder to write; must be missing or '
                        'empty unless --force')
    parser.add_argument('--model', metavar='NAME', help='architecture to build, needed when the checkpoint records '
                        'no arch (bare state dicts)')
    parser.add_argument('--no-ema', action='store_true', help='export the raw weights even if the checkpoint has '
                        'EMA weights (EMA is preferred by default)')
    parser.add_argument('--tag', metavar='TAG', help='pretrained tag recorded in config.json, e.g. cifar10_quick')
    parser.add_argument('--force', action='store_true', help='replace a non-empty output folder, once the new '
                        'export is complete and verified')
    parser.add_argument('--label-names', metavar='FILE', help='text file with one class name per line, in label '
                        'order (default: the names the run records, if any)')
    parser.add_argument('--dataset-id', action='append', metavar='ID', help='Hub dataset id for the card '
                        'metadata; repeat for several (default: derived from the run\'s dataset)')
    parser.add_argument('--license', metavar='ID', help='license id for the card metadata (default: the model\'s '
                        'pretrained config license)')
    parser.add_argument('--repo-id', metavar='ORG/NAME', help='repository id for the card\'s usage snippet '
                        '(default: a placeholder that `timm-shakedrop push` fills in)')
    parser.add_argument('--no-eval', action='store_true', help='do not evaluate on the run\'s validation split '
                        'when summary.csv lacks metrics for the exported weights')
    parser.add_argument('--verbose', '-v', action='store_true', help='log debug messages')
    return parser


def _read_label_names(path: str) -> list[str]:
    lines = Path(path).read_text(encoding='utf-8').splitlines()
    return [line.strip() for line in lines if line.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run `timm-shakedrop export` and return its exit code."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    with command_logging('export', args.verbose):
        from timm_shakedrop.hub import export_checkpoint

        try:
            result = export_checkpoint(
                args.checkpoint,
                args.output,
                model_name=args.model,
                use_ema=not args.no_ema,
                tag=args.tag,
                force=args.force,
                label_names=_read_label_names(args.label_names) if args.label_names else None,
                dataset_ids=args.dataset_id,
                license=args.license,
                repo_id=args.repo_id,
                evaluate=not args.no_eval,
            )
        except KeyboardInterrupt:
            print('timm-shakedrop export: interrupted; nothing was written.', file=sys.stderr)
            return 130
        except (ValueError, RuntimeError, OSError) as error:
            message = ' '.join(str(error).split())
            print(f'timm-shakedrop export: error: {message}', file=sys.stderr)
            return 1
    print(f'Exported the {result.weights} weights of {result.architecture} to {result.output_dir}')
    for name, size in result.files.items():
        print(f'  {name}: {size:,} bytes')
    if result.metrics is not None:
        print(f'  validation top-1 {result.metrics.top1:.2f}%')
    else:
        print(f'  no validation metrics: {result.metrics_note}')
    return 0
