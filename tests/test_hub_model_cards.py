"""The family model cards in model_cards/: up to date, valid metadata, computed sizes, sources and citations."""
import hub_server as hub
import pytest
import timm
from huggingface_hub import ModelCard
from torch import nn

from timm_shakedrop.hub import model_cards as mc

# Fixture of hub_server.py, bound here so that pytest finds it.
one_torch_thread = hub.one_torch_thread
pytestmark = pytest.mark.usefixtures('one_torch_thread')

FAMILIES = sorted(mc.load_families())
# Small models whose counts are recomputed here; the large ones are checked by the write_model_cards command.
RECOMPUTED = {'shakedrop_pyramidnet': ['shakedrop_pyramidnet20_a48', 'shakedrop_pyramidnet56_a48'],
              'shakedrop_resnet': ['shakedrop_resnet20_cifar', 'shakedrop_resnet110_cifar']}
STALE_HINT = 'run `python -m timm_shakedrop.hub.write_model_cards` and commit the cards'


def _card_text(family_name: str) -> str:
    return mc.family_card_path(mc.load_families()[family_name]).read_text(encoding='utf-8')


def test_family_texts_parse():
    assert FAMILIES == ['shakedrop_pyramidnet', 'shakedrop_resnet']
    for family in mc.load_families().values():
        assert family.citations
        assert family.limitations
        assert family.architecture


def test_every_registered_model_has_a_family():
    names = timm.list_models('shakedrop_*')
    assert names
    assert [n for n in names if mc.family_for_model(n) is None] == []
    assert mc.family_for_model('shakedrop_pyramidnet272.cifar100').name == 'shakedrop_pyramidnet'
    assert mc.family_for_model('shakedrop_resnext50_32x4d').name == 'shakedrop_resnet'
    assert mc.family_for_model('resnet50') is None


@pytest.mark.parametrize('family_name', FAMILIES)
def test_family_card_lists_every_registered_tag(family_name):
    family = mc.load_families()[family_name]
    listed = [row.name for row in mc.parse_family_card_stats(_card_text(family_name))]
    registered = sorted(n for n in timm.list_models(include_tags=True) if family.matches(n))
    assert sorted(listed) == registered, STALE_HINT


@pytest.mark.parametrize('family_name', FAMILIES)
def test_family_card_matches_template(family_name):
    # Rendering with the counts read back from the card must give the card: the text, the YAML file and the
    # template agree with what is committed.
    family = mc.load_families()[family_name]
    text = _card_text(family_name)
    assert mc.render_family_card(family, mc.parse_family_card_stats(text)) == text, STALE_HINT


@pytest.mark.parametrize('family_name', FAMILIES)
def test_family_card_counts_are_computed(family_name):
    family = mc.load_families()[family_name]
    listed = {row.name: row for row in mc.parse_family_card_stats(_card_text(family_name))}
    for row in mc.family_variant_stats(family, RECOMPUTED[family_name]):
        assert listed[row.name] == row, STALE_HINT


def test_resnet_card_parameter_counts():
    # Parameter counts stated for the CIFAR ResNets of He et al. with 10 classes.
    listed = {row.name: row for row in mc.parse_family_card_stats(_card_text('shakedrop_resnet'))}
    assert listed['shakedrop_resnet20_cifar.cifar10'].params == 269_722
    assert listed['shakedrop_resnet110_cifar.cifar10'].params == 1_727_962


def test_tag_counts_follow_from_classifier():
    family = mc.load_families()['shakedrop_pyramidnet']
    rows = {r.name: r for r in mc.family_variant_stats(family, ['shakedrop_pyramidnet20_a48'])}
    model = timm.create_model('shakedrop_pyramidnet20_a48.cifar100')
    assert rows['shakedrop_pyramidnet20_a48.cifar100'].params == mc.count_parameters(model)
    assert rows['shakedrop_pyramidnet20_a48.cifar100'].macs == mc.count_macs(model, (3, 32, 32))


@pytest.mark.parametrize('family_name', FAMILIES)
def test_family_card_metadata(family_name):
    card = ModelCard(_card_text(family_name))
    assert mc.validate_card_metadata(card, family_name) == []
    assert card.data.library_name == 'timm'
    assert card.data.pipeline_tag == 'image-classification'
    assert card.data.license == 'apache-2.0'
    assert 'transformers' not in card.data.tags


def test_pyramidnet_card_sources_and_citations():
    text = _card_text('shakedrop_pyramidnet')
    assert '@article{yamada2019shakedrop' in text
    assert 'journal={IEEE Access}' in text
    assert '@inproceedings{han2017pyramidnet' in text
    assert 'github.com/jhkim89/PyramidNet' in text
    assert 'arXiv:1805.09501' in text
    assert '| Baseline (flip and crop) | 14.0 |' in text
    assert '| Cutout | 12.2 |' in text
    assert '| AutoAugment | 10.7 |' in text
    # Results measured here are kept apart from the literature's.
    assert text.index('### Reported in the literature') < text.index('### Measured by this project')
    assert 'timm-shakedrop train --recipe shakedrop-cifar' in text


def test_resnet_card_citations_and_scale_note():
    text = _card_text('shakedrop_resnet')
    assert '@article{yamada2019shakedrop' in text
    assert '@inproceedings{he2016deep' in text
    assert 'Starting from weights trained without ShakeDrop' in text
    assert 'No paper results are tabulated on this card yet.' in text


def test_count_macs_of_small_network():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4))
    # 8 filters x 27 weights x 64 output pixels, then 8 x 4 for the linear layer.
    assert mc.count_macs(model, (3, 8, 8)) == 8 * 27 * 64 + 8 * 4
    assert mc.count_parameters(model) == 8 * 27 + 8 * 4 + 4


def test_count_macs_on_meta_device():
    real = timm.create_model('shakedrop_pyramidnet20_a48')
    meta = timm.create_model('shakedrop_pyramidnet20_a48', device='meta')
    assert real.training
    assert mc.count_macs(meta, (3, 32, 32)) == mc.count_macs(real, (3, 32, 32)) == 72_243_136
    assert real.training  # count_macs restores the mode it found


def test_format_count():
    assert mc.format_count(999) == '999'
    assert mc.format_count(310_845) == '310.85K (310,845)'
    assert mc.format_count(26_210_842) == '26.21M (26,210,842)'
    assert mc.format_count(4_488_778_176) == '4.49G (4,488,778,176)'


@pytest.mark.parametrize('front_matter, match', [
    ('library_name: timm\npipeline_tag: image-classification\nlicense: mit\ntags:\n- transformers\n',
     "tags must not contain 'transformers'"),
    ('library_name: timm\npipeline_tag: image-classification\n', 'license is missing'),
    ('library_name: timm\npipeline_tag: image-classification\nlicense: mit\ndatasets: 3\n',
     'datasets must be a list of Hub dataset ids'),
])
def test_card_metadata_errors(front_matter, match):
    with pytest.raises(ValueError, match=match):
        mc.validate_card_metadata(ModelCard(f'---\n{front_matter}---\n# card\n'), 'card')


def test_card_without_dataset_warns():
    card = ModelCard('---\nlibrary_name: timm\npipeline_tag: image-classification\nlicense: mit\n---\n# card\n')
    assert mc.validate_card_metadata(card, 'card') == ['card: the model card metadata names no dataset id.']


def test_write_model_cards_check_reports_nothing_stale(monkeypatch, capsys):
    # Rendering every model is slow, so the counts come from the committed cards here.
    monkeypatch.setattr(mc, 'family_variant_stats',
                        lambda family: mc.parse_family_card_stats(mc.family_card_path(family).read_text()))
    assert mc.main(['--check']) == 0
    assert capsys.readouterr().out == ''
