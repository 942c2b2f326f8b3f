"""What a resumed run takes from the option file when the schedule or the optimizer changed."""
import pytest
import torch

from coic_basicsr.models.portable import build_model
from helpers.coic import in_memory, tiny_coic_options


def _model(tmp_path, scheduler: dict, optim_g: dict = None):
    opt = in_memory(tiny_coic_options(total_iter=8, stage1_iter=4), tmp_path)
    opt['train']['scheduler'] = scheduler
    opt['train']['optim_g'] = optim_g or {'type': 'AdamW', 'lr': 1e-3}
    return build_model(opt)


def _state_after(model, iterations: int) -> dict:
    for current_iter in range(1, iterations + 1):
        model.update_learning_rate(current_iter)
    return {'iter': iterations, 'epoch': 0, 'optimizers': [o.state_dict() for o in model.optimizers],
            'schedulers': [s.state_dict() for s in model.schedulers]}


@pytest.mark.parametrize('changed', [
    {'gamma': 0.1}, {'milestones': [2, 3]}, {'restarts': [0, 3], 'restart_weights': [1, 0.2]},
    {'milestones': [2, 3], 'restarts': [0, 3], 'restart_weights': [1, 0.2]},  # BasicSR restarts, not decays, at 3
])
def test_a_changed_multistep_schedule_gives_the_uninterrupted_runs_rate(tmp_path, changed):
    before = {'type': 'MultiStepLR', 'milestones': [2], 'gamma': 0.5}
    state = _state_after(_model(tmp_path, before), 4)
    resumed = _model(tmp_path, dict(before, **changed))
    resumed.resume_training(state)
    uninterrupted = _model(tmp_path, dict(before, **changed))
    _state_after(uninterrupted, 4)
    for model in (resumed, uninterrupted):
        model.update_learning_rate(5)
    expected = uninterrupted.get_current_learning_rate()
    assert expected != pytest.approx([5e-4, 5e-4])  # the state's own schedule: what a resumed run used to keep
    assert resumed.get_current_learning_rate() == pytest.approx(expected)


def test_an_unchanged_multistep_schedule_keeps_the_states_rates(tmp_path):
    schedule = {'type': 'MultiStepLR', 'milestones': [2, 3], 'gamma': 0.3}
    state = _state_after(_model(tmp_path, schedule), 4)
    resumed = _model(tmp_path, schedule)
    resumed.resume_training(state)
    assert [g['lr'] for g in resumed.optimizers[0].param_groups] == [g['lr'] for g in state['optimizers'][0][
        'param_groups']]


@pytest.mark.parametrize('optim_g, message', [
    ({'type': 'SGD', 'lr': 1e-3, 'momentum': 0.9}, "optimizer 0 of the state is not a SGD's"),
    ({'type': 'AdamW', 'lr': 1e-3, 'amsgrad': True}, r'optimizer 0 \(AdamW\): amsgrad cannot be switched on')])
def test_an_optimizer_the_state_does_not_fit_is_refused_in_one_line(tmp_path, optim_g, message):
    model = _model(tmp_path, {'type': 'MultiStepLR', 'milestones': [2]})
    model.feed_data({'lq': torch.rand(1, 3, 16, 16), 'gt': torch.rand(1, 3, 16, 16),
                     'lq_global': torch.rand(1, 3, 16, 16), 'gt_global': torch.rand(1, 3, 16, 16)})
    model.optimize_parameters(1)  # the optimizer has moments to keep
    state = _state_after(model, 1)
    with pytest.raises(ValueError, match=f'path.resume_state: {message}'):  # a bare KeyError at the first step
        _model(tmp_path, {'type': 'MultiStepLR', 'milestones': [2]}, optim_g).resume_training(state)


def test_betas_given_as_a_list_compare_and_log_as_tuples(caplog, monkeypatch):
    # older torch keeps a YAML list in param_groups; the state's tuple is the same setting, not a change
    import logging
    from coic_basicsr.models import resume
    monkeypatch.setattr(resume, 'get_root_logger', lambda: logging.getLogger('test_resume'))
    restore_optimizer_settings = resume.restore_optimizer_settings
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], betas=(0.9, 0.999))
    optimizer.param_groups[0]['betas'] = [0.9, 0.999]
    with caplog.at_level('INFO', logger='test_resume'):
        restore_optimizer_settings([optimizer], [[{'betas': (0.9, 0.999)}]])
        assert 'resumes with' not in caplog.text
        restore_optimizer_settings([optimizer], [[{'betas': [0.5, 0.9]}]])
    assert 'betas: (0.9, 0.999) -> (0.5, 0.9)' in caplog.text
    assert optimizer.param_groups[0]['betas'] == (0.5, 0.9)
