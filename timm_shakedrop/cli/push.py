"""`timm-shakedrop push DIR --repo-id ORG/NAME`: upload an exported folder to the Hugging Face Hub."""
import argparse
import sys

from timm_shakedrop.hub._cli import command_logging

__all__ = ['main']


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='timm-shakedrop push',
        description='Upload a folder written by `timm-shakedrop export` to a Hugging Face Hub model repository in '
                    'one commit, creating the repository and the branch when they do not exist.',
    )
    parser.add_argument('folder', metavar='DIR', help='exported folder (model.safetensors, config.json, README.md)')
    parser.add_argument('--repo-id', required=True, metavar='ORG/NAME', help='target repository')
    parser.add_argument('--private', action='store_true', help='create the repository as private (an existing '
                        'repository keeps its visibility)')
    parser.add_argument('--revision', metavar='BRANCH', help='branch to commit to, created from main when missing '
                        '(default: main)')
    parser.add_argument('--create-pr', action='store_true', help='open a pull request against main instead of '
                        'committing to it')
    parser.add_argument('--commit-message', metavar='MSG', help='commit summary')
    parser.add_argument('--token', metavar='TOKEN', help='access token (default: HF_TOKEN or the stored login of '
                        '`hf auth login`; prefer those, a command-line token shows in the process list)')
    parser.add_argument('--endpoint', metavar='URL', help='Hub URL (default: HF_ENDPOINT or '
                        'https://huggingface.co)')
    parser.add_argument('--verbose', '-v', action='store_true', help='log debug messages')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `timm-shakedrop push` and return its exit code."""
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.create_pr and args.revision not in (None, 'main'):
        parser.error(f'--create-pr opens a pull request against main, so it cannot be combined with '
                     f'--revision {args.revision}; drop one of them.')
    with command_logging('push', args.verbose):
        from timm_shakedrop.hub import PushError, push_to_hub

        try:
            result = push_to_hub(
                args.folder,
                args.repo_id,
                private=args.private,
                revision=args.revision,
                create_pr=args.create_pr,
                commit_message=args.commit_message,
                token=args.token,
                endpoint=args.endpoint,
            )
        except KeyboardInterrupt:
            print('timm-shakedrop push: interrupted.', file=sys.stderr)
            return 130
        except (PushError, ValueError, RuntimeError, OSError) as error:
            message = ' '.join(str(error).split())
            if args.token:
                message = message.replace(args.token, '***')
            print(f'timm-shakedrop push: error: {message}', file=sys.stderr)
            return 1
    print(f'Pushed {args.folder} to {result.repo_url}')
    print(f'  {"pull request" if result.pr_url else "commit"}: {result.pr_url or result.commit_url}')
    return 0
