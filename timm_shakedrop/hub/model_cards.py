"""Model cards: one card per registered model family, and the card of each exported checkpoint.

The text of a family (architecture, paper results with their sources, limitations, BibTeX) is in
`model_cards/families/<family>.yaml`. The layout is in the Jinja templates of `model_cards/templates/`, which
huggingface_hub's `ModelCard.from_template` renders with the YAML metadata block. Parameter counts and
multiply-accumulates are computed from the registered models, never typed in.

Regenerate the family cards `model_cards/<family>.md` after a model or a family text changes::

    python -m timm_shakedrop.hub.write_model_cards          # rewrite the cards
    python -m timm_shakedrop.hub.write_model_cards --check  # exit 1 if a card on disk is out of date
"""
import argparse
import dataclasses
import functools
import re
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import ModelCard, ModelCardData
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    'CARD_TAGS',
    'LIBRARY_NAME',
    'PIPELINE_TAG',
    'ModelFamily',
    'ResultsTable',
    'VariantStats',
    'count_macs',
    'count_parameters',
    'family_for_model',
    'family_variant_stats',
    'format_count',
    'load_families',
    'model_cards_dir',
    'parse_family_card_stats',
    'render_family_card',
    'validate_card_metadata',
    'write_family_cards',
]

LIBRARY_NAME = 'timm'
PIPELINE_TAG = 'image-classification'
# Tags of every card. `transformers` is left out on purpose: that library cannot load these architectures.
CARD_TAGS = ('image-classification', 'timm', 'timm-shakedrop')

# Hub dataset ids of the datasets the registered pretrained tags target.
TAG_DATASETS = {
    'cifar10': 'uoft-cs/cifar10',
    'cifar100': 'uoft-cs/cifar100',
    'in1k': 'ILSVRC/imagenet-1k',
}


def model_cards_dir() -> Path:
    """Return the folder that contains the card templates and family texts.

    An installed wheel carries it as `timm_shakedrop/model_cards`; an editable install reads the repository's
    `model_cards/`.
    """
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / 'model_cards', package_dir.parent / 'model_cards'):
        if (candidate / 'templates').is_dir():
            return candidate
    raise RuntimeError(
        f'The model card templates are missing: neither {package_dir / "model_cards"} nor '
        f'{package_dir.parent / "model_cards"} has a templates/ folder. Reinstall timm-shakedrop.')


@dataclasses.dataclass(frozen=True)
class ResultsTable:
    """A table of results taken from a paper or another source, with that source."""
    title: str
    source: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclasses.dataclass(frozen=True)
class TrainingCommand:
    description: str
    command: str


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """The text of a model family's card, read from `model_cards/families/<name>.yaml`."""
    name: str
    title: str
    model_prefixes: tuple[str, ...]
    example_model: str
    tags: tuple[str, ...]
    license: str
    summary: str
    architecture: str
    paper_results: tuple[ResultsTable, ...]
    paper_results_note: str
    training_commands: tuple[TrainingCommand, ...]
    limitations: tuple[str, ...]
    citations: tuple[str, ...]

    def matches(self, model_name: str) -> bool:
        return model_name.startswith(self.model_prefixes)


_FAMILY_KEYS = {
    'name', 'title', 'model_prefixes', 'example_model', 'tags', 'license', 'summary', 'architecture', 'paper_results',
    'paper_results_note', 'training_commands', 'limitations', 'citations',
}


def _parse_family(path: Path) -> ModelFamily:
    data = yaml.safe_load(path.read_text(encoding='utf-8'))
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping of the family fields.')
    unknown = set(data) - _FAMILY_KEYS
    missing = _FAMILY_KEYS - set(data) - {'paper_results_note', 'training_commands'}
    if unknown or missing:
        raise ValueError(f'{path}: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}.')
    tables = []
    for table in data['paper_results']:
        columns = tuple(str(c) for c in table['columns'])
        rows = tuple(tuple(str(v) for v in row) for row in table['rows'])
        bad = [row for row in rows if len(row) != len(columns)]
        if bad:
            raise ValueError(f'{path}: rows {bad} of table {table["title"]!r} do not have {len(columns)} columns.')
        tables.append(ResultsTable(str(table['title']), str(table['source']).strip(), columns, rows))
    commands = tuple(
        TrainingCommand(str(c['description']).strip(), str(c['command']).strip())
        for c in data.get('training_commands') or ()
    )
    return ModelFamily(
        name=data['name'],
        title=data['title'],
        model_prefixes=tuple(data['model_prefixes']),
        example_model=data['example_model'],
        tags=tuple(data['tags']),
        license=data['license'],
        summary=str(data['summary']).strip(),
        architecture=str(data['architecture']).strip(),
        paper_results=tuple(tables),
        paper_results_note=str(data.get('paper_results_note') or '').strip(),
        training_commands=commands,
        limitations=tuple(str(item).strip() for item in data['limitations']),
        citations=tuple(str(item).strip() for item in data['citations']),
    )


@functools.lru_cache(maxsize=1)
def load_families() -> dict[str, ModelFamily]:
    """Return the model families described in `model_cards/families/`, by name."""
    families = {}
    for path in sorted((model_cards_dir() / 'families').glob('*.yaml')):
        family = _parse_family(path)
        if family.name != path.stem:
            raise ValueError(f'{path}: `name` is {family.name!r}, expected the file name {path.stem!r}.')
        families[family.name] = family
    return families


def family_for_model(model_name: str) -> ModelFamily | None:
    """Return the family whose name prefixes match `model_name` (with or without a pretrained tag)."""
    for family in load_families().values():
        if family.matches(model_name):
            return family
    return None


# Counting

def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Return the multiply-accumulates of one eval forward pass on a single image of `input_size` (C, H, W).

    Counts what `torch.utils.flop_counter` counts (convolutions, matrix products), halved from FLOPs to MACs.
    The pass runs on the device of the model's parameters, so a model built on the meta device costs no compute.
    """
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(torch.zeros((1, *input_size), device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def format_count(value: int) -> str:
    """Format a parameter or MAC count as '26.21M (26,210,842)' or '4.49G (4,488,778,176)'."""
    for scale, suffix in ((1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
        if value >= scale:
            return f'{value / scale:.2f}{suffix} ({value:,})'
    return f'{value:,}'


# Family cards

@dataclasses.dataclass(frozen=True)
class VariantStats:
    """Size and cost of one registered model with one of its pretrained tags, at that tag's input size."""
    name: str
    num_classes: int
    input_size: tuple[int, int, int]
    params: int
    macs: int

    @property
    def input_text(self) -> str:
        return '×'.join(str(v) for v in self.input_size)

    @property
    def params_text(self) -> str:
        return format_count(self.params)

    @property
    def macs_text(self) -> str:
        return format_count(self.macs)


def family_variant_stats(family: ModelFamily, model_names: list[str] | None = None) -> list[VariantStats]:
    """Count parameters and MACs of the registered models of `family`, for each of their pretrained tags.

    Each model is built once, on the meta device, with its first tag's config. Tags with the same input size
    differ only in the number of classes, so their counts follow exactly from the size of the linear classifier.

    Args:
        family: The family.
        model_names: Registered names to count, without tags; None counts every model of the family.
    """
    import timm
    from timm.models import get_arch_pretrained_cfgs

    if model_names is None:
        model_names = sorted(n for n in timm.list_models() if family.matches(n))
    stats = []
    for model_name in model_names:
        cfgs = get_arch_pretrained_cfgs(model_name) or {model_name: timm.models.get_pretrained_cfg(model_name)}
        tags = list(cfgs)
        first = cfgs[tags[0]]
        model = timm.create_model(tags[0], device='meta').eval()
        base_params = count_parameters(model)
        base_macs = count_macs(model, tuple(first.input_size))
        classifier = model.get_classifier()
        if not isinstance(classifier, nn.Linear):
            raise RuntimeError(f'{model_name}: expected a linear classifier, got {type(classifier).__name__}.')
        for tag, cfg in cfgs.items():
            if tuple(cfg.input_size) != tuple(first.input_size):
                tag_model = timm.create_model(tag, device='meta').eval()
                params, macs = count_parameters(tag_model), count_macs(tag_model, tuple(cfg.input_size))
            else:
                extra = cfg.num_classes - first.num_classes
                params = base_params + extra * (classifier.in_features + int(classifier.bias is not None))
                macs = base_macs + extra * classifier.in_features
            stats.append(VariantStats(tag, cfg.num_classes, tuple(cfg.input_size), params, macs))
    return stats


_TABLE_ROW = re.compile(r'^\| `(?P<name>[^`]+)` \| (?P<classes>\d+) \| (?P<input>[\d×]+) \| [^(]*\((?P<params>[\d,]+)\)'
                        r' \| [^(]*\((?P<macs>[\d,]+)\) \|$')


def parse_family_card_stats(text: str) -> list[VariantStats]:
    """Read back the "Registered models" table of a rendered family card."""
    stats = []
    for line in text.splitlines():
        match = _TABLE_ROW.match(line)
        if match:
            stats.append(VariantStats(
                name=match['name'],
                num_classes=int(match['classes']),
                input_size=tuple(int(v) for v in match['input'].split('×')),
                params=int(match['params'].replace(',', '')),
                macs=int(match['macs'].replace(',', '')),
            ))
    return stats


def _versions() -> dict[str, str]:
    import timm

    import timm_shakedrop

    return {'timm_shakedrop': timm_shakedrop.__version__, 'timm': timm.__version__,
            'torch': torch.__version__.split('+')[0]}


def render_family_card(family: ModelFamily, stats: list[VariantStats] | None = None) -> str:
    """Render the card of `family` from `model_cards/templates/family.md`."""
    stats = family_variant_stats(family) if stats is None else stats
    tag_names = {row.name.split('.', 1)[1] for row in stats if '.' in row.name}
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        license=family.license,
        tags=list(dict.fromkeys([*CARD_TAGS, *family.tags])),
        datasets=[TAG_DATASETS[t] for t in TAG_DATASETS if t in tag_names] or None,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(model_cards_dir() / 'templates' / 'family.md'),
        family=family,
        variants=stats,
        versions=_versions(),
        example_model=family.example_model,
    )
    return _normalize_markdown(str(card))


def _normalize_markdown(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    collapsed = []
    for line in lines:
        if line == '' and collapsed and collapsed[-1] == '':
            continue
        collapsed.append(line)
    return '\n'.join(collapsed).strip() + '\n'


def family_card_path(family: ModelFamily) -> Path:
    return model_cards_dir() / f'{family.name}.md'


def write_family_cards(check: bool = False) -> list[Path]:
    """Render every family card; write the changed ones, or with `check` only list them. Return those paths."""
    changed = []
    for family in load_families().values():
        path = family_card_path(family)
        text = render_family_card(family)
        if not path.exists() or path.read_text(encoding='utf-8') != text:
            changed.append(path)
            if not check:
                path.write_text(text, encoding='utf-8')
    return changed


# Metadata checks

def validate_card_metadata(card: ModelCard, where: str) -> list[str]:
    """Check the metadata that a timm model card on the Hub needs; raise ValueError or return warnings.

    Required: `library_name: timm`, `pipeline_tag: image-classification`, a `license`, and no `transformers` tag.
    A card without `datasets` only gets a warning, because some training sets have no Hub dataset id.
    """
    data = card.data
    problems = []
    if data.library_name != LIBRARY_NAME:
        problems.append(f'library_name must be {LIBRARY_NAME!r}, got {data.library_name!r}')
    if data.pipeline_tag != PIPELINE_TAG:
        problems.append(f'pipeline_tag must be {PIPELINE_TAG!r}, got {data.pipeline_tag!r}')
    if not data.license:
        problems.append('license is missing')
    tags = data.tags or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        problems.append(f'tags must be a list of strings, got {tags!r}')
    elif 'transformers' in tags:
        problems.append("tags must not contain 'transformers', which cannot load these models")
    datasets = data.datasets
    if datasets is not None and (not isinstance(datasets, list) or not all(isinstance(d, str) and d
                                                                           for d in datasets)):
        problems.append(f'datasets must be a list of Hub dataset ids, got {datasets!r}')
    if problems:
        raise ValueError(f'{where}: invalid model card metadata: ' + '; '.join(problems) + '.')
    return [] if datasets else [f'{where}: the model card metadata names no dataset id.']


def card_template(name: str) -> Path:
    return model_cards_dir() / 'templates' / name


def render_card(card_data: ModelCardData, template: str, **kwargs: Any) -> str:
    """Render `model_cards/templates/<template>` with `card_data` as its metadata block."""
    card = ModelCard.from_template(card_data, template_path=str(card_template(template)), **kwargs)
    return _normalize_markdown(str(card))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m timm_shakedrop.hub.write_model_cards',
        description='Regenerate the family model cards in model_cards/ from the family texts and the models.',
    )
    parser.add_argument('--check', action='store_true', help='only report out-of-date cards, exit 1 if any')
    args = parser.parse_args(argv)
    changed = write_family_cards(check=args.check)
    for path in changed:
        print(f'{"out of date" if args.check else "wrote"}: {path}')
    return 1 if (args.check and changed) else 0
