"""The benchmark scripts run end to end at tiny sizes and print their tables (numbers are not asserted: timings
belong to benchmark runs, never to tests)."""
import argparse
import importlib
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def run_script(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, osp.join(ROOT, 'benchmarks', name), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_coic_overhead_prints_params_times_and_memory():
    # BRN: the cheapest backbone for the two fresh processes the memory columns take (IDT's took 70 s of CI)
    proc = run_script('coic_overhead.py', '--archs', 'CoICBRN', '--size', '16', '--repeats', '1', '--threads', '1')
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = [line for line in proc.stdout.splitlines() if line.startswith('CoICBRN')][0]
    cells = row.replace('|', ' ').split()
    assert cells[1] == '16' and cells[2] == '375,526'  # the official BRN's parameter count
    memory_plain, memory_z = float(cells[-3]), float(cells[-2])
    assert memory_plain > 0 and memory_z > 0


def test_coic_overhead_channels_last_and_compact_generators_run():
    proc = run_script('coic_overhead.py', '--archs', 'CoICDRSformer', '--size', '12', '--repeats', '1', '--threads',
                      '1', '--no-memory', '--channels-last', '--generator-width', '4')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'memory_format=channels_last generator_width=4' in proc.stdout
    row = [line for line in proc.stdout.splitlines() if line.startswith('CoICDRSformer')][0].split()
    assert row[1] == '16'  # the size it ran at: DRSformer pads 12 to a multiple of 8
    assert row[2] == '33,655,424' and float(row[4]) < 10  # the compact generators' parameter share


def test_coic_overhead_steps_multi_stage_nets_on_all_their_outputs():
    proc = run_script('coic_overhead.py', '--archs', 'CoICRCDNet', '--size', '16', '--repeats', '1', '--threads', '1',
                      '--no-memory')
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = [line for line in proc.stdout.splitlines() if line.startswith('CoICRCDNet')][0].split()
    assert row[2] == '2,975,186' and float(row[6]) > 0 and float(row[7]) > 0  # paper-size RCDNet, both steps timed


@pytest.mark.parametrize('layout', ['channels-last', 'nchw'])
def test_grouped_conv_weight_grad_checks_every_rewrite_and_names_the_choice(layout: str):
    proc = run_script('grouped_conv_weight_grad.py', '--tiny', '--repeats', '1', '--threads', '1',
                      *(['--nchw'] if layout == 'nchw' else []))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (['1'], ['4'])]
    assert len(rows) == 8
    kernel_picks = [row[-4] for row in rows]
    if layout == 'nchw':  # every shape, the 3x3 channel pairs too
        assert kernel_picks == ['as_conv'] * 8
        assert [row[-1] for row in rows] == ['as_forward'] * 8
    else:  # channels-last 3x3 keeps the plain kernel gradient; only the dilated conv's input gradient is rewritten
        assert kernel_picks == ['as_conv', 'as_conv', 'as_conv', 'plain'] * 2
        assert [row[-1] for row in rows] == ['plain', 'plain', 'as_forward', 'plain'] * 2


def test_modulated_conv_overhead_checks_every_implementation_against_the_module():
    proc = run_script('modulated_conv_overhead.py', '--batch', '2', '--size', '8', '--repeats', '1', '--threads', '1',
                      '--channels-last')
    assert proc.returncode == 0, proc.stderr[-2000:]
    for impl in ('module', 'fold', 'per-sample', 'slice-loop', 'unfold', 'vmap'):
        assert f' {impl} ' in proc.stdout


def test_reference_step_names_a_missing_reference_copy(tmp_path):
    proc = run_script('reference_step.py', '--reference-dir', str(tmp_path))
    assert proc.returncode != 0
    assert 'models/DRSformer_CoIM.py' in proc.stderr and 'Schizophreni/CoIC' in proc.stderr
    proc = run_script('reference_step.py', '--reference-dir', str(tmp_path), '--arch', 'brn')
    assert proc.returncode != 0 and 'models/BRN_CoIM.py' in proc.stderr


# A stand-in with the interface of the authors' models/BRN_CoIM.py (their code is never part of this repository): it
# checks how the script builds and calls it.
STAND_IN_BRN = """
import torch
from torch import nn


class BRN(nn.Module):
    def __init__(self, opt):
        super().__init__()
        assert (opt.inter_iter, opt.dim_in, opt.use_GPU) == (8, 128, False)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.code = nn.Linear(128, 3)

    def forward(self, input, tran_x, mode='normal'):
        assert (mode == 'normal') == (tran_x is None) and mode in ('normal', 'tran')
        out = self.conv(input)
        return out if tran_x is None else out + self.code(tran_x)[:, :, None, None]
"""


# Loaded with the stand-in, this records every L1 target the script steps a network with.
RECORD_L1_TARGETS = """
import os.path
from torch.nn import functional

_l1_loss = functional.l1_loss


def _recording_l1_loss(out, gt):
    with open(os.path.join(os.path.dirname(__file__), 'targets.txt'), 'a') as f:
        f.write(repr(gt.double().sum().item()) + '\\n')
    return _l1_loss(out, gt)


functional.l1_loss = _recording_l1_loss
"""


def test_reference_step_times_the_brn_pair(tmp_path):
    (tmp_path / 'models').mkdir()
    (tmp_path / 'models' / '__init__.py').write_text('')
    (tmp_path / 'models' / 'BRN_CoIM.py').write_text(STAND_IN_BRN + RECORD_L1_TARGETS)
    proc = run_script('reference_step.py', '--reference-dir', str(tmp_path), '--arch', 'brn', '--batch', '2',
                      '--size', '16', '--repeats', '1', '--threads', '1', '--generator-width', '4')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'arch=brn ' in proc.stdout and 'reference 471  ours 580,749  ours width 4 ' in proc.stdout
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(('step', 'forward'))]
    assert [' '.join(row[:2]) for row in rows] == ['step z', 'step z=None', 'forward z', 'forward z=None']
    assert all(len(row) == 7 and row[4].endswith('x') and row[6].endswith('x') for row in rows)
    targets = (tmp_path / 'models' / 'targets.txt').read_text().split()
    assert len(targets) == 12 and len(set(targets)) == 1  # 3 networks x (warm-up + 1) x 2 kinds of step: one target


@pytest.mark.timeout(600)
def test_distributed_throughput_runs_one_and_two_gloo_processes():
    proc = run_script('distributed_throughput.py', '--iters', '1', '--warmup', '0', '--stages', '2', '--configs',
                      '1x1', '2x1', timeout=550)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip().startswith('2 ')]
    assert [(r[1], r[2]) for r in rows] == [('1', '1'), ('2', '1')]
    assert all(float(r[4]) > 0 for r in rows)


@pytest.mark.timeout(600)
def test_coic_vs_baseline_trains_tests_and_tabulates_both_arms(tmp_path):
    proc = run_script('coic_vs_baseline.py', '--backbone', 'restormer-tiny', '--iters', '4', '--stage1', '2', '--seeds',
                      '1', '--batch', '2', '--crop', '32', '--train-per-source', '2', '--test-per-source', '1',
                      '--size', '48', '--generator-width', '2', '--out', str(tmp_path), timeout=550)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    table = (tmp_path / 'coic_vs_baseline.md').read_text()
    assert 'CoIC generator_width 2' in table
    rows = [line for line in table.splitlines() if line.startswith('| ') and not line.startswith('| source')]
    assert [row.split('|')[1].strip() for row in rows] == ['light_sparse', 'heavy_dense', 'slanted_long',
                                                           'mist_textures', 'all']
    assert 'generator_width: 2' in (tmp_path / 'coic_width2_restormer-tiny_seed0.yml').read_text()
    assert 'generator_width' not in (tmp_path / 'baseline_restormer-tiny_seed0.yml').read_text()
    assert (tmp_path / 'results' / 'coic_width2_restormer-tiny_seed0_test' / 'settings.json').is_file()
    assert (tmp_path / 'data' / 'test' / 'mist_textures' / 'settings.json').is_file()


def test_data_pipeline_times_every_backend_and_worker_count():
    proc = run_script('data_pipeline.py', '--pairs', '2', '--height', '64', '--width', '80', '--batches', '2',
                      '--batch-size', '2', '--crop', '32', '--workers', '0', '1', '--threads', '1')
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = [[cell.strip() for cell in line.strip('|').split('|')] for line in proc.stdout.splitlines()
            if line.startswith('| ') and 'items/s' not in line]
    assert [(data.split()[0], workers) for data, workers, _ in rows] == [
        ('png', '0'), ('png', '1'), ('lmdb', '0'), ('lmdb', '1'), ('synthetic', '0'), ('synthetic', '1')]
    assert all(float(speed) > 0 for *_, speed in rows)


def import_script(name: str, monkeypatch: pytest.MonkeyPatch):
    """A benchmark script as a module (its folder on sys.path, as when it runs)."""
    monkeypatch.syspath_prepend(osp.join(ROOT, 'benchmarks'))
    return importlib.import_module(name)


@pytest.mark.parametrize('script, args, message', [
    ('coic_overhead', ['--repeats', '0'], 'argument --repeats: must be at least 1, got 0'),
    ('coic_overhead', ['--size', '0'], 'argument --size: must be at least 1, got 0'),
    ('coic_overhead', ['--batch', '0'], 'argument --batch: must be at least 1, got 0'),
    ('modulated_conv_overhead', ['--repeats', '0'], 'argument --repeats: must be at least 1, got 0'),
    ('reference_step', ['--reference-dir', '.', '--repeats', '0'], 'argument --repeats: must be at least 1, got 0'),
    ('coic_vs_baseline', ['--seeds', '0'], 'argument --seeds: must be at least 1, got 0'),
    ('coic_vs_baseline', ['--iters', '4', '--stage1', '4'], '--stage1 (4) must be below --iters (4)'),
    ('distributed_throughput', ['--configs', '2'], "--configs: '2' is not PROCESSESxTHREADS (e.g. 2x1)"),
    ('distributed_throughput', ['--configs', '1x1', '2x1x1'], "--configs: '2x1x1' is not PROCESSESxTHREADS"),
    ('distributed_throughput', ['--configs', '0x1'], "--configs: '0x1' is not PROCESSESxTHREADS"),
    ('distributed_throughput', ['-opt', 'no/such.yml'], "-opt: option file '"),
])
def test_scripts_refuse_bad_values_in_one_line(script: str, args: list, message: str, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        import_script(script, monkeypatch).main(args)
    error = str(exit_info.value.code) if exit_info.value.code != 2 else capsys.readouterr().err.strip()
    assert message in error.splitlines()[-1], error  # argparse: usage lines, then the one-line error


def test_distributed_throughput_finds_its_default_options_from_any_folder(tmp_path, monkeypatch):
    script = import_script('distributed_throughput', monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert script.option_file(None) == osp.join(ROOT, 'options', 'coic_restormer_demo.yml')
    assert script.backends([(1, 1)]) == '1 process'
    assert script.backends([(1, 2), (2, 1)]) == '1 process, gloo for 2 processes'


def test_coic_vs_baseline_rebuilds_data_made_with_other_settings(tmp_path, monkeypatch):
    script = import_script('coic_vs_baseline', monkeypatch)
    lq = tmp_path / 'train' / 'heavy_dense' / 'lq'
    script.make_benchmark(str(tmp_path), 1, 1, 16)
    assert len(os.listdir(lq)) == 1
    script.make_benchmark(str(tmp_path), 2, 1, 16)  # more pairs
    assert len(os.listdir(lq)) == 2
    script.make_benchmark(str(tmp_path), 2, 1, 24)  # larger images
    assert cv2.imread(str(lq / '0001.png')).shape[:2] == (24, 24)


def test_coic_vs_baseline_retrains_a_run_whose_settings_changed(tmp_path, monkeypatch):
    script = import_script('coic_vs_baseline', monkeypatch)
    calls = []

    def fake_run(command: list, workdir: str) -> None:  # stands in for basicsr train / test
        calls.append(command[0])
        if command[0] == 'test':
            folder = osp.join(workdir, 'results', command[2][:-len('.yml')])
            os.makedirs(folder, exist_ok=True)
            with open(osp.join(folder, 'bench_test_metrics.json'), 'w') as f:
                json.dump({'all': {'psnr': len(calls)}}, f)

    monkeypatch.setattr(script, 'run', fake_run)
    args = argparse.Namespace(backbone='restormer-tiny', iters=4, stage1=2, batch=2, crop=16, contrastive_weight=0.2,
                              generator_width=None, train_per_source=1, test_per_source=1, size=16, out=str(tmp_path))
    root = str(tmp_path / 'data')
    assert script.train_and_test(args, root, 0, True) == {'all': {'psnr': 2}}
    assert script.train_and_test(args, root, 0, True) == {'all': {'psnr': 2}} and len(calls) == 2  # reused
    for flag, value in (('iters', 6), ('stage1', 3), ('batch', 4), ('crop', 8), ('contrastive_weight', 0.1),
                        ('size', 24), ('train_per_source', 2), ('test_per_source', 2)):
        before = len(calls)
        setattr(args, flag, value)
        assert script.train_and_test(args, root, 0, True) == {'all': {'psnr': before + 2}}, flag  # trained + tested
        assert calls[before:] == ['train', 'test'], flag
    before = len(calls)
    args.generator_width = 4  # another arm: its own run
    script.train_and_test(args, root, 0, True)
    script.train_and_test(args, root, 0, True)
    assert len(calls) == before + 2
