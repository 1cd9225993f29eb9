"""Data-parallel training with torchrun: two CPU processes (gloo), each with its own batch, must train exactly like
one process that takes both batches at once, which only holds if the gradients of the two are averaged."""
import re, shutil, subprocess, sys, time
import pytest
import torch
from test_smoke import (ROOT, TINY, final_losses, run, step_losses, text_file,  # noqa: F401 (text_file: a fixture)
                        train_in_process)


def test_two_processes_train_like_one(tmp_path, text_file):
    common = [f'--input_file={text_file}', '--num_chars=0', *TINY['gpt.py'], '--max_iters=20', '--log_interval=1',
              '--dtype=float32', '--device=cpu']  # float32: the two runs sum in different orders, keep it exact
    one = run('gpt.py', *common, f'--checkpoint={tmp_path / "one.pt"}')  # (TINY's batch: 16)
    two = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                          str(ROOT / 'gpt.py'), *common, '--batch_size=8', f'--checkpoint={tmp_path / "two.pt"}'],
                         capture_output=True, text=True, timeout=180)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stdout + two.stderr
    assert '1 process' in one.stdout and '2 processes' in two.stdout
    assert two.stdout.count('final:') == 1  # only the first process evaluates and prints
    a, b = step_losses(one.stdout), step_losses(two.stdout)
    assert [s for s, _ in a] == [s for s, _ in b] == [str(i) for i in range(1, 21)]
    for (step, x), (_, y) in zip(a, b):  # Muon orthogonalises in bfloat16, so tiny differences grow a little
        assert abs(float(x) - float(y)) <= 1e-3, (step, x, y)
    assert final_losses(one.stdout) == pytest.approx(final_losses(two.stdout), abs=1e-3)


def test_the_plan_times_the_step_as_torchrun_trains_it(monkeypatch):
    # inside DDP, with its all-reduce, and for as many steps in every process (else one waits for another forever)
    import gpt
    wrapped, steps, step = [], [], gpt.optimizer_step
    monkeypatch.setattr(gpt, 'DDP', True)
    monkeypatch.setattr(gpt, 'DistributedDataParallel', lambda net: wrapped.append(net) or net)
    monkeypatch.setattr(gpt, 'optimizer_step', lambda *args: steps.append(1) or step(*args))
    monkeypatch.setattr(gpt, 'shared', lambda number, add=False: 42.0)  # (the first process's figure)
    assert gpt.time_step(dict(n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=2), 65, 'float32') == 42.0
    assert len(wrapped) == 1 and len(steps) == 8


def test_a_planned_run_under_torchrun(tmp_path, text_file):
    # the plan times the step in both processes, inside DDP: a real run of two, planned, 3 steps of it
    sizes = [a for a in TINY['gpt.py'] if not a.startswith(('--max_iters', '--eval_interval'))]
    out = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                          str(ROOT / 'gpt.py'), f'--input_file={text_file}', f'--checkpoint={tmp_path / "gpt.pt"}',
                          '--device=cpu', *sizes, '--time_budget=60', '--stop_after=3', '--num_chars=0'],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r'^model .*: [\d,.]+ ms a step here', out.stdout, re.M), out.stdout
    assert re.search(r'^stopped at step 3 of [\d,]+: saved ', out.stdout, re.M), out.stdout


def test_processes_refit_together_whichever_evaluated(tmp_path, text_file):
    # only the first process evaluates, and its clock restarts after: the refit at the first progress line past
    # warm-up (a broadcast) must come in every process alike, or one waits for the other forever
    sizes = [a for a in TINY['gpt.py'] if not a.startswith(('--max_iters', '--eval_interval', '--log_interval',
                                                            '--warmup_iters'))]
    args = [str(ROOT / 'gpt.py'), f'--input_file={text_file}', f'--checkpoint={tmp_path / "gpt.pt"}', '--device=cpu',
            *sizes, '--warmup_iters=2', '--eval_interval=3', '--log_interval=5', '--stop_after=10',
            '--time_budget=60', '--num_chars=0']
    proc = subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.terminate()  # (torchrun ends its processes, killing them 30 s on)
        proc.communicate(timeout=60)
        pytest.fail('the two processes waited on each other for 90 s')
    assert proc.returncode == 0, stdout + stderr
    assert re.search(r'^step 5: [\d,]+ ms a step as it runs', stdout, re.M), stdout  # (it refitted)
    assert re.search(r'^stopped at step 10 of [\d,]+: saved ', stdout, re.M), stdout


def test_each_process_trains_on_its_own_share(monkeypatch):
    # each process trains batch_size windows of its own (N GPUs, N times the windows of one): every process
    # draws all of them and keeps its own rows, which together are what one process with N batches takes, once
    import gpt
    monkeypatch.setattr(gpt, 'block_size', 8)
    monkeypatch.setattr(gpt, 'batch_size', 6)
    data = torch.arange(1000)
    whole, _ = gpt.get_batch(data, 3)
    monkeypatch.setattr(gpt, 'batch_size', 3)
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(gpt, 'RANK', rank)
        monkeypatch.setattr(gpt, 'WORLD', 2)
        shares.append(gpt.get_batch(data, 3)[0])
    assert shares[0].shape == shares[1].shape == (3, 8)
    assert sorted(map(tuple, torch.cat(shares).tolist())) == sorted(map(tuple, whole.tolist()))


def test_a_process_with_no_window_to_evaluate_agrees_on_the_loss(monkeypatch):
    # a tiny validation split and two processes: the second has no window of its own, and must still take the
    # first's sum as it is (every process decides on it: the best model, the end of the run)
    import gpt
    for name, value in dict(block_size=8, batch_size=4, RANK=1, WORLD=2, DDP=True, device='cpu',
                            dtype='float32').items():
        monkeypatch.setattr(gpt, name, value)
    monkeypatch.setattr(gpt.dist, 'all_reduce', lambda tensor: tensor.add_(2.75))  # (the first process's sum)
    model = gpt.GPT(gpt.Config(10, n_layer=1, n_head=2, n_embd=16, block_size=8, pair_rows=0, dropout=0.0))
    data = torch.randint(10, (12,))  # one window of 8 and what follows it: the first process's
    assert gpt.split_loss(model, data) == 2.75


def test_dropout_masks_differ_by_process_and_step(monkeypatch):
    # with the same masks in every process, N processes would drop the same units in each share of the batch
    import gpt
    def masks(rank, step):
        monkeypatch.setattr(gpt, 'RANK', rank)
        monkeypatch.setattr(gpt, 'WORLD', 2)
        gpt.seed_dropout(step)
        return torch.rand(100) < 0.5
    assert not torch.equal(masks(0, 5), masks(1, 5))  # another process
    assert not torch.equal(masks(0, 5), masks(0, 6))  # another step
    assert torch.equal(masks(1, 5), masks(1, 5))      # the same again: what a resume relies on


def test_training_seeds_each_step_and_process_apart(monkeypatch, tmp_path):
    import gpt
    seeds, forward = [], gpt.GPT.forward
    def record(model, *args, **kwargs):  # the seed each training step's dropout draws from
        if model.training:
            seeds.append(torch.initial_seed())
        return forward(model, *args, **kwargs)
    monkeypatch.setattr(gpt.GPT, 'forward', record)
    monkeypatch.setattr(gpt, 'RANK', 1)
    monkeypatch.setattr(gpt, 'WORLD', 2)
    train_in_process(monkeypatch, tmp_path, max_iters=4)
    assert seeds == [gpt.seed + 2 * step + 1 for step in range(4)]


def test_collectives_carry_tensors_on_the_training_device(monkeypatch):
    # NCCL reduces only GPU tensors: every number the processes share (the loss, the stop flag, the plan's
    # figures) is reduced on the device trained on. 'meta' stands in for a GPU; a CPU tensor would show 'cpu'.
    import gpt
    class Reduced(Exception):
        pass
    def reduce(tensor, src=0):
        raise Reduced(tensor.device.type)
    monkeypatch.setattr(gpt, 'DDP', True)
    monkeypatch.setattr(gpt, 'device', 'meta')
    monkeypatch.setattr(gpt.dist, 'all_reduce', reduce)
    monkeypatch.setattr(gpt.dist, 'broadcast', reduce)
    for add in (True, False):
        with pytest.raises(Reduced, match='^meta$'):
            gpt.shared(2.5, add=add)
    monkeypatch.setattr(gpt, 'device', 'cpu')
    monkeypatch.setattr(gpt.dist, 'all_reduce', lambda tensor: tensor.mul_(2))  # as if the other agreed
    assert gpt.shared(2.5, add=True) == 5.0 and gpt.shared(True, add=True) is True


@pytest.mark.parametrize('device, checks', [('cuda', [4, 8, 12]), ('cpu', list(range(1, 13)))])
def test_the_processes_agree_at_progress_lines_on_gpus_and_every_step_on_cpus(device, checks, tmp_path, monkeypatch):
    # agreeing (the mean loss, and whether any process was stopped) is a collective, and reading it makes the host
    # wait for the device: at every step it would keep every GPU from queueing ahead. GPUs agree at progress lines
    # only, where the loss is read anyway; CPUs, whose steps can be seconds, at every step, as torchrun kills its
    # processes 30 s after Ctrl-C: a stop must be agreed on well before that
    import gpt
    reduced = []
    monkeypatch.setattr(gpt, 'DDP', True)  # one process stands in for several: without DDP's wrapper
    monkeypatch.setattr(gpt, 'DistributedDataParallel', lambda net: net)
    monkeypatch.setattr(gpt, 'shared', lambda number, add: reduced.append(number) or number)  # (alone here)
    monkeypatch.setattr(gpt, 'to_device', lambda t: t)  # (no GPU here: only the setting says cuda)
    run = train_in_process(monkeypatch, tmp_path, max_iters=12, log_interval=4, device=device)
    assert run.step == 12 and len(reduced) == 2 * len(checks)  # at each: the loss, and any stop
    assert reduced[1::2] == [0] * len(checks)


def test_a_failure_in_one_process_ends_every_process(tmp_path, text_file):
    # only the first process saves: when its save fails (here the checkpoint's folder is gone), it must not leave
    # the other one waiting in the next collective; each ends with one line and exit status 2, no traceback
    folder = tmp_path / 'gone'
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                             str(ROOT / 'gpt.py'), f'--input_file={text_file}', f'--checkpoint={folder / "gpt.pt"}',
                             '--device=cpu', *TINY['gpt.py'], '--max_iters=100000', '--eval_interval=20', '--log_file=',
                             '--log_interval=1'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # training is under way, before the first save
        if line.startswith('step 1/'):
            break
    shutil.rmtree(folder)
    start = time.time()
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.time() - start < 30, stderr  # (torchrun's own exit status: 1)
    errors = re.findall(r'^error: .*$', stderr, re.M)
    assert len(errors) == 2 and any('cannot write' in e for e in errors), stderr
    assert any('process 1 stopped' in e for e in errors), stderr
    assert 'gpt.py", line' not in stderr  # no traceback from gpt.py (torchrun prints its own report)
