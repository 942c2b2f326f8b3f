"""CoIC training (``train.coic``) is refused before any work without a model class that reads it or a dataset that
gives the global views; a project's own classes are left to themselves, and test option files are not concerned."""
import pytest
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from coic_basicsr.models.coic_model import CoICModel
from coic_basicsr.models.global_views import check_coic_model_type, check_global_views_given
from helpers.coic import tiny_coic_options
from helpers.stock import write_options


def _coic_on_single_images(model_type: str) -> dict:
    opt = tiny_coic_options()
    opt['model_type'] = model_type
    opt['datasets']['train']['type'] = 'SingleImageDataset'  # BasicSR's: no lq_global/gt_global
    return opt


def test_an_empty_coic_section_still_needs_a_coic_model():
    # an empty section is CoIC training with every default, not an absent one (None is)
    opt = tiny_coic_options()
    opt.update(model_type='SRModel')
    opt['train']['coic'] = {}
    with pytest.raises(ValueError, match='^train.coic: only CoICModel .* model_type SRModel would train'):
        check_coic_model_type(opt)


def test_a_project_model_that_is_no_coic_model_is_left_to_give_its_own_views(monkeypatch):
    project_model = type('ProjectViewsModel', (SRModel,), {'__module__': 'my_project.models'})
    monkeypatch.setitem(MODEL_REGISTRY._obj_map, 'ProjectViewsModel', project_model)
    opt = _coic_on_single_images('ProjectViewsModel')
    check_coic_model_type(opt)
    check_global_views_given(opt)  # it may make the views itself: left to require_global_views


def test_a_project_subclass_of_coic_model_still_needs_a_dataset_with_global_views(monkeypatch):
    project_model = type('ProjectCoICSubclass', (CoICModel,), {'__module__': 'my_project.models'})
    monkeypatch.setitem(MODEL_REGISTRY._obj_map, 'ProjectCoICSubclass', project_model)
    opt = _coic_on_single_images('ProjectCoICSubclass')
    check_coic_model_type(opt)
    with pytest.raises(ValueError, match='^train.coic: needs lq_global/gt_global in the training batches, which '
                                         'datasets.train.type SingleImageDataset does not give'):
        check_global_views_given(opt)


def test_a_test_option_file_with_a_coic_section_is_not_refused_for_its_model_type(tmp_path):
    # basicsr test reads no train section: a training file reused for testing must not be refused for it
    from coic_basicsr.utils.options import parse_options
    from coic_basicsr.utils.validate import check_options
    opt = tiny_coic_options(name='tested', coic=False)
    opt['model_type'] = 'SRModel'
    opt['train'] = {'coic': {'stage1_iter': 2}}
    opt['datasets'] = {'test_1': opt['datasets']['val']}
    opt['path'] = {'pretrain_network_g': str(tmp_path / 'net_g.pth')}
    argv = ['-opt', write_options(opt, str(tmp_path / 'test.yml'))]
    parsed, _ = parse_options(argv, str(tmp_path), is_train=False, prog='basicsr test')  # as test_pipeline does
    assert not parsed['is_train'] and parsed['train']['coic'] == {'stage1_iter': 2}
    check_options(parsed)
    with pytest.raises(ValueError, match='^train.coic: only CoICModel'):  # what training would refuse
        check_coic_model_type(parsed)
