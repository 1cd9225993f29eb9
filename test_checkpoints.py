"""Checkpoints, resume, sampling from a saved model, and bad input: every failure is one clear line on stderr,
exit status 2, and the files on disk stay as they were."""
import csv, math, os, re, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from filelock import FileLock
from test_smoke import (ROOT, SCRIPTS, TINY, final_losses, run, step_losses, text_file,  # noqa: F401 (a fixture)
                        train_in_process)

CKPT_NAME = {'bigram.py': 'bigram.pt', 'gpt.py': 'gpt.pt'}


def snapshot(folder):  # every file's bytes: what "nothing on disk changed" compares
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def assert_clear_error(out, *fragments):
    assert out.returncode == 2, (out.returncode, out.stdout[-2000:], out.stderr)
    assert 'Traceback' not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    for fragment in fragments:
        assert fragment in out.stderr, (fragment, out.stderr)


@pytest.fixture(scope='session')
def trained(tmp_path_factory, text_file):
    """One tiny trained checkpoint per script, shared by the tests that only read it (and by pytest-xdist's
    workers: the first one trains, under a lock, and the others find its files)."""
    base = tmp_path_factory.getbasetemp()  # (under xdist a worker's, in the session's folder)
    folder = (base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base) / 'trained'
    with FileLock(f'{folder}.lock'):  # (filelock comes with torch)
        if not (folder / 'done').is_file():
            folder.mkdir(exist_ok=True)
            for script in SCRIPTS:
                out = run(script, f'--input_file={text_file}', f'--checkpoint={folder / CKPT_NAME[script]}',
                          '--num_chars=0', *TINY[script])
                assert out.returncode == 0, out.stderr
            (folder / 'done').write_text('')
    return folder


@pytest.fixture
def workdir(tmp_path, trained):  # a private copy of the trained checkpoints
    for p in trained.glob('*.pt'):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    return tmp_path


# ---------------------------------------------------------------------- resume
def log_rows(path):  # the log's rows without the clock's seconds, which differ from run to run
    with open(path, newline='', encoding='utf-8') as f:
        return [{k: v for k, v in row.items() if k != 'seconds'} for row in csv.DictReader(f)]


@pytest.mark.parametrize('script', ['gpt.py'])  # (bigram.py has no resume: a run takes seconds)
def test_resume_gives_the_same_run_as_never_stopping(script, text_file, tmp_path):
    # and its log, written as it goes (a crash keeps its rows), goes on in the same file from where it was
    common = [f'--input_file={text_file}', '--num_chars=0', *TINY[script], '--max_iters=30', '--log_interval=5',
              '--eval_interval=10']  # (stopped at 12: between progress lines)
    whole = run(script, *common, f'--checkpoint={tmp_path / "whole.pt"}')
    first = run(script, *common, f'--checkpoint={tmp_path / "split.pt"}', '--stop_after=12')
    stopped = log_rows(tmp_path / 'split.csv')  # what a crash at step 12 would leave
    second = run(script, *common, f'--checkpoint={tmp_path / "split.pt"}', '--resume=True')
    for out in (whole, first, second):
        assert out.returncode == 0, out.stderr
    assert [s for s, _ in step_losses(first.stdout)] == ['5', '10']
    assert step_losses(first.stdout) + step_losses(second.stdout) == step_losses(whole.stdout)
    assert final_losses(second.stdout) == final_losses(whole.stdout)
    rows = log_rows(tmp_path / 'whole.csv')
    assert [r['step'] for r in rows if r['train_loss']] == [str(i) for i in range(5, 31, 5)] + ['30']
    assert [r['step'] for r in rows if r['val_loss']] == ['10', '20', '30']  # (30: the final line's)
    assert [r['train_loss'] for r in rows if r['train_loss']][:6] == [loss for _, loss in step_losses(whole.stdout)]
    assert (rows[-1]['train_loss'], rows[-1]['val_loss']) == tuple(f'{v:.4f}' for v in final_losses(whole.stdout))
    assert int(rows[-1]['characters']) == 30 * 16 * (32 if script == 'gpt.py' else 16)
    assert [r['step'] for r in stopped] == ['5', '10', '10']
    assert log_rows(tmp_path / 'split.csv')[:3] == stopped and log_rows(tmp_path / 'split.csv') == rows
    a = torch.load(tmp_path / 'whole.pt', weights_only=True)
    b = torch.load(tmp_path / 'split.pt', weights_only=True)
    assert a['step'] == b['step'] == 30
    for name, weight in a['model'].items():  # the same model, to float tolerance
        assert torch.allclose(weight, b['model'][name], atol=1e-5), name


def test_what_is_evaluated_and_kept_is_the_weights_running_average(text_file, tmp_path):
    common = [f'--input_file={text_file}', '--num_chars=0', *TINY['gpt.py'], '--log_interval=1',
              '--eval_interval=10']
    averaged = run('gpt.py', *common, f'--checkpoint={tmp_path / "averaged.pt"}')
    plain = run('gpt.py', *common, f'--checkpoint={tmp_path / "plain.pt"}', '--ema=0')
    stopped = run('gpt.py', *common, f'--checkpoint={tmp_path / "stopped.pt"}', '--stop_after=40')
    for out in (averaged, plain, stopped):
        assert out.returncode == 0, out.stderr
    assert step_losses(averaged.stdout) == step_losses(plain.stdout)  # training never sees the average
    evaluated = [re.findall(r'^step \d+: val loss (\S+)', out.stdout, re.M) for out in (averaged, plain)]
    assert len(evaluated[0]) == 5 and evaluated[0] != evaluated[1]
    assert final_losses(averaged.stdout)[1] <= final_losses(plain.stdout)[1]  # (short: the weights)
    ckpt = torch.load(tmp_path / 'stopped.pt', weights_only=True)  # the weights and their average, apart
    assert not torch.equal(ckpt['model']['embed.weight'], ckpt['average']['embed.weight'])
    assert torch.equal(ckpt['best'][2]['embed.weight'], ckpt['average']['embed.weight'])  # (best at 40)


def test_the_end_keeps_the_average_where_it_is_better_than_the_last_weights(tmp_path, monkeypatch):
    import copy, gpt
    trained = train_in_process(monkeypatch, tmp_path, max_iters=20)
    model = copy.deepcopy(trained.average).train()
    model.head.weight.data.mul_(50)  # last weights far worse than their average
    data = torch.randint(12, (2000,), dtype=torch.uint8)
    gpt.finish(model, trained, data, data[:200])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), trained.average.parameters()))
    assert torch.equal(torch.load(tmp_path / 'gpt.pt', weights_only=True)['model']['head.weight'],
                       trained.average.head.weight)  # (saved so)


def test_resume_after_the_turn_goes_on_from_the_stopped_weights(tmp_path):
    # random letters are over-trained at once: by step 40 the val loss has turned, and the best model (step 30) is
    # older than the run. A stop at 40 must save the run as it stands (evaluated at 40, as the whole run is), not
    # the best model, or the resumed run goes on from older weights; with dropout and input noise, which must
    # resume too.
    rng = torch.Generator().manual_seed(0)
    path = tmp_path / 'noise.txt'
    path.write_text(''.join('abcdefgh \n'[i] for i in torch.randint(10, (6000,), generator=rng)), encoding='utf-8')
    common = [f'--input_file={path}', '--num_chars=0', '--n_layer=2', '--n_head=2', '--n_embd=64', '--block_size=32',
              '--batch_size=16', '--max_iters=60', '--dropout=0.2', '--input_noise=0.1', '--warmup_iters=5',
              '--eval_interval=10', '--log_interval=1', '--patience=0']  # (patience would end it at 40)
    whole = run('gpt.py', *common, f'--checkpoint={tmp_path / "whole.pt"}')
    first = run('gpt.py', *common, f'--checkpoint={tmp_path / "split.pt"}', '--stop_after=40')
    second = run('gpt.py', *common, f'--checkpoint={tmp_path / "split.pt"}', '--resume=True')
    for out in (whole, first, second):
        assert out.returncode == 0, out.stderr
    evaluations = re.findall(r'^step (\d+): val loss (\d+\.\d+) \(best (\d+\.\d+) at step (\d+)\)$', whole.stdout, re.M)
    assert evaluations[3][0] == '40' and float(evaluations[3][1]) > float(evaluations[3][2])  # past the turn at 40
    assert 'final:' not in first.stdout and 'stopped at step 40 of 60' in first.stdout
    assert re.findall(r'^step \d+: val.*$', first.stdout + second.stdout, re.M) == \
        re.findall(r'^step \d+: val.*$', whole.stdout, re.M)
    assert step_losses(first.stdout) + step_losses(second.stdout) == step_losses(whole.stdout)
    assert final_losses(second.stdout) == final_losses(whole.stdout)


def test_sampling_a_stopped_run_takes_its_best_model(tmp_path):
    # stopped at step 40, past the turn (as in the test above), the latest weights are not the best: sampling
    # takes the best evaluated model (what load() gives too), and says so; resuming took the latest
    rng = torch.Generator().manual_seed(0)
    path = tmp_path / 'noise.txt'
    path.write_text(''.join('abcdefgh \n'[i] for i in torch.randint(10, (6000,), generator=rng)), encoding='utf-8')
    ckpt = tmp_path / 'gpt.pt'
    out = run('gpt.py', f'--input_file={path}', f'--checkpoint={ckpt}', '--num_chars=0', '--n_layer=2',
              '--n_head=2', '--n_embd=64', '--block_size=32', '--batch_size=16', '--max_iters=60', '--dropout=0.0',
              '--warmup_iters=5', '--eval_interval=10', '--stop_after=40', '--patience=0')
    assert out.returncode == 0, out.stderr
    evaluated = [float(v) for v in re.findall(r'^step \d+: val loss (\d+\.\d+)', out.stdout, re.M)]
    best_step = 10 * (evaluated.index(min(evaluated)) + 1)
    assert best_step < 40  # past the turn
    sampled = run('gpt.py', f'--checkpoint={ckpt}', '--sample_only=True', '--num_chars=10')
    assert sampled.returncode == 0, sampled.stderr
    note = f'sampling the best model of that run: step {best_step} of 40, val loss {min(evaluated):.4f}'
    assert note in sampled.stdout
    sys.path.insert(0, str(ROOT))
    import gpt
    model, chars = gpt.load(str(ckpt), device='cpu')
    saved = torch.load(ckpt, weights_only=True)
    assert all(torch.equal(w, saved['best'][2][k]) for k, w in model.state_dict().items())
    assert not all(torch.equal(w, saved['model'][k]) for k, w in model.state_dict().items())
    greedy = run('gpt.py', f'--checkpoint={ckpt}', '--sample_only=True', '--prompt=ab', '--num_chars=40',
                 '--temperature=0', '--dtype=float32')  # (what it sampled: that model's likeliest)
    assert gpt.sample(model, chars, 'ab', 40, temperature=0) in greedy.stdout


@pytest.mark.parametrize('before, after', [('float32', 'float16'), ('float16', 'bfloat16')])
def test_resume_in_another_precision(before, after, text_file, tmp_path):
    # a checkpoint written on a CPU or an A100 (no loss scaling) goes on on a T4 (float16, scaled), and back
    common = [f'--input_file={text_file}', '--num_chars=0', *TINY['gpt.py'], '--max_iters=20',
              f'--checkpoint={tmp_path / "gpt.pt"}', '--log_interval=1']
    assert run('gpt.py', *common, f'--dtype={before}', '--stop_after=8').returncode == 0
    out = run('gpt.py', *common, f'--dtype={after}', '--resume=True')
    assert out.returncode == 0 and out.stderr == '', out.stderr
    assert [s for s, _ in step_losses(out.stdout)] == [str(i) for i in range(9, 21)]  # went on
    ckpt = torch.load(tmp_path / 'gpt.pt', weights_only=True)
    assert ckpt['step'] == 20 and [row['step'] for row in ckpt['log'][:8]] == list(range(1, 9))


def test_loss_scaling_backs_off_skips_the_step_and_resumes(tmp_path, monkeypatch):
    # float16, as on a T4: a gradient that overflows (here the output head's, made infinite on purpose) must halve
    # the scale and leave EVERY weight as it was (also Muon's matrices, whose gradients were finite), and the
    # scale must come back from the checkpoint
    sys.path.insert(0, str(ROOT))
    import gpt
    for name, value in dict(dtype='float16', device='cpu', max_iters=10, weight_decay=0.1,
                            checkpoint=str(tmp_path / 'gpt.pt')).items():
        monkeypatch.setattr(gpt, name, value)
    torch.manual_seed(0)
    model = gpt.GPT(gpt.Config(12, n_layer=2, n_head=2, n_embd=32, block_size=16, pair_rows=gpt.pair_rows, dropout=0.0))
    run = gpt.start_run(model, 'abcdefghijkl', None)
    x, y = torch.randint(12, (4, 16)), torch.randint(12, (4, 16))
    gpt.set_learning_rates(run)
    gpt.optimizer_step(model, run, model(x, y))  # a normal step: every optimizer now has momentum
    scale = run.scaler.get_scale()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hook = model.head.weight.register_hook(lambda grad: grad * math.inf)
    gpt.optimizer_step(model, run, model(x, y))
    hook.remove()
    assert run.scaler.get_scale() == scale / 2
    for name, weight in model.state_dict().items():
        assert torch.equal(weight, before[name]), f'{name} moved in a step that overflowed'
    gpt.save_checkpoint(model, run)
    resumed = gpt.start_run(model, 'abcdefghijkl', torch.load(tmp_path / 'gpt.pt', weights_only=True))
    assert resumed.scaler.get_scale() == scale / 2 != gpt.start_run(model, 'abcdefghijkl', None).scaler.get_scale()


def test_float16_with_loss_scaling_trains_and_resumes(text_file, tmp_path):
    # float16, as on a GPU without bfloat16: the loss is scaled, and the scale is part of what a resume restores
    common = [f'--input_file={text_file}', '--num_chars=0', *TINY['gpt.py'], '--max_iters=20', '--log_interval=1',
              '--dtype=float16']
    whole = run('gpt.py', *common, f'--checkpoint={tmp_path / "whole.pt"}')
    first = run('gpt.py', *common, f'--checkpoint={tmp_path / "split.pt"}', '--stop_after=8')
    second = run('gpt.py', *common, f'--checkpoint={tmp_path / "split.pt"}', '--resume=True')
    for out in (whole, first, second):
        assert out.returncode == 0 and out.stderr == '', out.stderr
    assert step_losses(first.stdout) + step_losses(second.stdout) == step_losses(whole.stdout)
    assert final_losses(second.stdout) == final_losses(whole.stdout)
    train, val = final_losses(whole.stdout)
    assert val < float(step_losses(whole.stdout)[0][1]) - 0.5  # it learned
    scaler = torch.load(tmp_path / 'whole.pt', weights_only=True)['scaler']
    assert scaler['scale'] >= 1 and scaler['_growth_tracker'] >= 0  # a live scaler, not a disabled one
    # at step 8 the scale is still its start's, as a new scaler's: one saved at 1024 goes on at 1024
    first = run('gpt.py', *common, f'--checkpoint={tmp_path / "low.pt"}', '--stop_after=8')
    ckpt = torch.load(tmp_path / 'low.pt', weights_only=True)
    ckpt['scaler']['scale'] = 1024.0
    torch.save(ckpt, tmp_path / 'low.pt')
    second = run('gpt.py', *common, f'--checkpoint={tmp_path / "low.pt"}', '--resume=True')
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert torch.load(tmp_path / 'low.pt', weights_only=True)['scaler']['scale'] == 1024.0


def test_resume_takes_the_learning_rates_given_now(text_file, tmp_path):
    common = [f'--input_file={text_file}', '--num_chars=0', *TINY['gpt.py'], '--max_iters=30',
              f'--checkpoint={tmp_path / "gpt.pt"}', '--ema=0']  # (an ended run saves the average)
    assert run('gpt.py', *common, '--stop_after=12').returncode == 0
    saved = torch.load(tmp_path / 'gpt.pt', weights_only=True)['model']
    out = run('gpt.py', *common, '--resume=True', '--lr=0', '--embed_lr=0', '--pair_lr=0', '--muon_lr=0')
    assert out.returncode == 0, out.stderr
    resumed = torch.load(tmp_path / 'gpt.pt', weights_only=True)
    assert resumed['step'] == 30
    for name, weight in saved.items():  # with every rate 0, 18 more steps leave every weight as it was
        assert torch.equal(weight, resumed['model'][name]), name


@pytest.mark.parametrize('script', ['gpt.py'])  # (bigram.py has no resume: a run takes seconds)
def test_resume_takes_the_optimizer_settings_given_now(script, text_file, tmp_path):
    # a saved optimizer brings its own settings (fused AdamW, written on a CPU, would run fused on a Mac): the
    # settings of now must win; here an optimizer setting the checkpoint holds is changed in it by hand
    path = tmp_path / 'model.pt'
    common = [f'--input_file={text_file}', '--num_chars=0', *TINY[script], '--max_iters=20', f'--checkpoint={path}']
    assert run(script, *common, '--stop_after=8').returncode == 0
    def adamw(ckpt):  # the AdamW state in a checkpoint of either script
        return ckpt['optimizer'] if script == 'bigram.py' else ckpt['optimizers'][-1]
    ckpt = torch.load(path, weights_only=True)
    adamw(ckpt)['param_groups'][-1]['eps'] = 0.5  # as if another version of the script, or another machine, chose it
    torch.save(ckpt, path)
    assert run(script, *common, '--resume=True').returncode == 0
    assert adamw(torch.load(path, weights_only=True))['param_groups'][-1]['eps'] == 1e-8


@pytest.mark.parametrize('script', ['gpt.py'])  # (bigram.py has no resume: a run takes seconds)
def test_resume_refuses_a_text_with_new_characters(script, workdir, text_file):
    other = workdir / 'other.txt'
    other.write_text(text_file.read_text(encoding='utf-8') + 'Zé\n', encoding='utf-8')
    before = snapshot(workdir)
    out = run(script, f'--input_file={other}', f'--checkpoint={workdir / CKPT_NAME[script]}', '--resume=True',
              *TINY[script])
    assert_clear_error(out, '2 characters that', 'never seen', "'Zé'")
    assert snapshot(workdir) == before


def test_resume_refuses_a_run_that_has_ended(workdir, text_file):
    before = snapshot(workdir)  # the trained checkpoint's run ended: its final line said, its model kept
    out = run('gpt.py', f'--input_file={text_file}', f'--checkpoint={workdir / "gpt.pt"}', '--resume=True',
              *TINY['gpt.py'])
    assert_clear_error(out, 'gpt.pt holds a run that has ended', '--sample_only=True')
    assert snapshot(workdir) == before


def test_resume_refuses_fewer_steps_than_it_has_trained(tmp_path, text_file):
    common = [f'--input_file={text_file}', f'--checkpoint={tmp_path / "gpt.pt"}', '--num_chars=0', *TINY['gpt.py']]
    assert run('gpt.py', *common, '--stop_after=30').returncode == 0
    before = snapshot(tmp_path)
    out = run('gpt.py', *common, '--resume=True', '--max_iters=20')
    assert_clear_error(out, 'has trained 30 steps already, more than --max_iters=20')
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize('stop_after', [0, 20])
def test_ctrl_c_in_the_last_step_lets_the_call_end(stop_after, tmp_path, text_file):
    # the run's own end (its evaluations, its final line, saved as ended) rather than a stop that a resume would
    # have to end, and that a resume given more steps (as a run ended by patience saves fewer) would train past;
    # a call told to stop there stops as told
    last = stop_after or 60
    code = ('import os, runpy, signal, sys, torch; sys.argv = sys.argv[1:]; clip = torch.nn.utils.clip_grad_norm_\n'
            'steps = []\n'
            'def clip_then_ctrl_c_in_the_last_step(*args, **kwargs):\n    steps.append(1)\n'
            f'    if len(steps) == {last}:\n        os.kill(os.getpid(), signal.SIGINT)\n'
            '    return clip(*args, **kwargs)\n'
            'torch.nn.utils.clip_grad_norm_ = clip_then_ctrl_c_in_the_last_step\n'
            'runpy.run_path(sys.argv[0], run_name="__main__")')
    common = [f'--input_file={text_file}', f'--checkpoint={tmp_path / "gpt.pt"}', '--num_chars=0', *TINY['gpt.py']]
    out = subprocess.run([sys.executable, '-c', code, str(ROOT / 'gpt.py'), '--device=cpu', *common,
                          f'--stop_after={stop_after}'], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and 'interrupted' not in out.stdout, out.stderr
    saved = torch.load(tmp_path / 'gpt.pt', weights_only=True)
    assert saved['step'] == last and saved['ended'] == (not stop_after)
    if stop_after:
        assert 'stopped at step 20 of 60' in out.stdout
        return
    finals = [row for row in log_rows(tmp_path / 'gpt.csv') if row['train_loss'] and row['val_loss']]
    assert 'final:' in out.stdout and len(finals) == 1 and finals[0]['step'] == '60'
    assert_clear_error(run('gpt.py', *common, '--resume=True'), 'holds a run that has ended')


def test_resume_refuses_another_model_shape(workdir, text_file):
    before = snapshot(workdir)
    out = run('gpt.py', f'--input_file={text_file}', f'--checkpoint={workdir / "gpt.pt"}', '--resume=True',
              *TINY['gpt.py'], '--n_embd=64')
    assert_clear_error(out, '--n_embd=64 does not fit', 'n_embd=32')
    assert snapshot(workdir) == before


# ---------------------------------------------------------------------- sampling from a checkpoint
def test_sample_from_a_checkpoint_with_a_prompt(workdir, text_file):
    before = snapshot(workdir)
    ckpt = f'--checkpoint={workdir / "gpt.pt"}'
    exact = '--dtype=float32'  # bfloat16 logits can tie, and ties break apart
    greedy = run('gpt.py', ckpt, '--sample_only=True', '--prompt=to be', '--num_chars=60', '--temperature=0',
                 f'--sample_file={workdir / "greedy.txt"}', exact)
    top1 = run('gpt.py', ckpt, '--sample_only=True', '--prompt=to be', '--num_chars=60', '--top_k=1', exact)
    assert greedy.returncode == 0 and top1.returncode == 0, greedy.stderr + top1.stderr
    sample = (workdir / 'greedy.txt').read_text(encoding='utf-8')
    assert sample.startswith('to be') and len(sample) == 65 and set(sample) <= set(text_file.read_text())
    assert sample in greedy.stdout and sample in top1.stdout  # top_k=1 is greedy too
    sys.path.insert(0, str(ROOT))
    import gpt
    assert gpt.sample(*gpt.load(str(workdir / 'gpt.pt'), device='cpu'), 'to be', 60, temperature=0) == sample
    assert 'final:' not in greedy.stdout  # nothing was trained
    assert {k: v for k, v in snapshot(workdir).items() if k != 'greedy.txt'} == before


def test_bigram_samples_from_its_checkpoint_with_a_prompt(workdir, text_file):
    before = snapshot(workdir)
    args = [f'--checkpoint={workdir / "bigram.pt"}', '--sample_only=True', '--prompt=to be', '--num_chars=60']
    outs = [run('bigram.py', *args, f'--seed={seed}') for seed in (1, 1, 2)]
    assert all(out.returncode == 0 for out in outs), outs[0].stderr
    first, again, other = (out.stdout.split('\n', 1)[1] for out in outs)  # after the settings line
    assert first.startswith('to be') and len(first) == 66 and set(first) <= set(text_file.read_text())
    assert first == again != other  # drawn by the seed
    sys.path.insert(0, str(ROOT))
    import bigram
    table = torch.load(workdir / 'bigram.pt', weights_only=True)['model']['weight']
    assert torch.equal(bigram.load(str(workdir / 'bigram.pt'))[0].weight.cpu(), table)  # (load: the trained table)
    assert 'final:' not in outs[0].stdout and snapshot(workdir) == before  # nothing trained, nothing written


def test_bigram_samples_what_its_table_says():
    # each row gives the next character: a table whose rows each make one successor all but certain draws a chain
    sys.path.insert(0, str(ROOT))
    import bigram
    model = bigram.Bigram(5)
    with torch.no_grad():
        model.weight.fill_(-1e4)[torch.arange(5), (torch.arange(5) + 2) % 5] = 1e4  # a -> c, b -> d, ...
    assert bigram.sample(model, 'abcde', 'b', 6) == 'bdacebd'


@pytest.mark.parametrize('script', SCRIPTS)
@pytest.mark.parametrize('mode', ['--sample_only=True', '--sample_only=False'])  # (training: said before it)
def test_prompt_with_unknown_characters(script, mode, workdir, text_file):
    before = snapshot(workdir)
    out = run(script, f'--checkpoint={workdir / CKPT_NAME[script]}', f'--input_file={text_file}', mode,
              *TINY[script], '--prompt=Zebra§', '--seed=7')  # (a run would save another model)
    assert_clear_error(out, 'not in the vocabulary', "'Z§'")
    assert snapshot(workdir) == before


def test_evaluations_save_at_most_once_a_minute(tmp_path, monkeypatch):
    # a checkpoint is written whole (at the lecture's size about 155 MB: the weights, their average, both
    # optimizers' state), so a save at each evaluation would spend a GPU's run writing; once a minute at most
    # still leaves a whole one from about the last minute, wherever the run is killed
    import gpt
    evaluated, saved, evaluate, write = [], [], gpt.evaluate, gpt.write_atomically
    def evaluate_then_a_minute_later(run, *args):
        evaluated.append(run.step)
        if run.step == 6:
            run.saved -= 61  # as if a minute had gone by since the last save
        return evaluate(run, *args)
    monkeypatch.setattr(gpt, 'evaluate', evaluate_then_a_minute_later)
    monkeypatch.setattr(gpt, 'write_atomically', lambda path, how: saved.append(evaluated[-1]) or write(path, how))
    train_in_process(monkeypatch, tmp_path, max_iters=12, eval_interval=2)
    assert evaluated == [2, 4, 6, 8, 10] and saved == [2, 6]
    assert torch.load(tmp_path / 'gpt.pt', weights_only=True)['step'] == 6


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])  # (a scheduler's)
def test_ctrl_c_saves_a_checkpoint_and_says_where(sig, tmp_path, text_file):
    ckpt = tmp_path / 'gpt.pt'
    args = [f'--input_file={text_file}', f'--checkpoint={ckpt}', *TINY['gpt.py'], '--max_iters=100000',
            '--log_interval=1', '--device=cpu']
    proc = subprocess.Popen([sys.executable, str(ROOT / 'gpt.py'), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until training is under way
        if line.startswith('step 3/'):
            break
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    step = int(re.search(r'interrupted at step (\d+): checkpoint saved to (.*)$', stdout, re.M)[1])
    assert str(ckpt) in stdout and 'Traceback' not in stderr
    assert torch.load(ckpt, weights_only=True)['step'] == step >= 3



@pytest.mark.parametrize('eval_interval', [4, 1])
def test_ctrl_c_at_an_evaluations_step_evaluates_before_it_saves(eval_interval, tmp_path, monkeypatch):
    # a resumed run goes on from the step after the one saved: an evaluation due at that step must be in the
    # checkpoint, or the resumed run would lack it (its best, its patience) where a run never stopped has it;
    # and the run still stops there, evaluations at every step or not
    import gpt
    average = gpt.update_average
    def ctrl_c_at_step_4(run, model):
        average(run, model)
        if run.step == 4:
            os.kill(os.getpid(), signal.SIGINT)
    evaluated, evaluate = [], gpt.evaluate
    monkeypatch.setattr(gpt, 'update_average', ctrl_c_at_step_4)
    monkeypatch.setattr(gpt, 'evaluate', lambda run, *args: evaluated.append(run.step) or evaluate(run, *args))
    with pytest.raises(SystemExit, match='130'):
        train_in_process(monkeypatch, tmp_path, max_iters=12, eval_interval=eval_interval)
    assert evaluated[-1] == 4 == torch.load(tmp_path / 'gpt.pt', weights_only=True)['step']


def test_ctrl_c_in_the_end_s_evaluations_and_save_waits_for_them(tmp_path, text_file):
    # the end's evaluations and save take seconds: Ctrl-C there must not lose the run (here during the save)
    code = ('import os, runpy, signal, sys; sys.argv = sys.argv[1:]; sync = os.fsync\n'
            'def interrupted(fd):\n    sync(fd)\n    os.kill(os.getpid(), signal.SIGINT)\n'
            'os.fsync = interrupted\n'
            'runpy.run_path(sys.argv[0], run_name="__main__")')
    ckpt = tmp_path / 'gpt.pt'
    out = subprocess.run([sys.executable, '-c', code, str(ROOT / 'gpt.py'), '--device=cpu', f'--input_file={text_file}',
                          f'--checkpoint={ckpt}', '--log_file=', '--num_chars=0', *TINY['gpt.py'], '--eval_interval=1000'],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and 'final:' in out.stdout, out.stderr
    assert torch.load(ckpt, weights_only=True)['step'] == 60

# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize('script', SCRIPTS)
@pytest.mark.parametrize('make, fragments', [
    (lambda d: d / 'folder', ['folder: Is a directory']),
    (lambda d: d / 'small.bin' / 'x.txt', ['x.txt: Not a directory']),
    (lambda d: d / 'empty.txt', ['has 0 characters, fewer than the', 'needed']),
    (lambda d: d / 'short.txt', ['has 100 characters, fewer than the', 'needed']),
    (lambda d: d / 'latin1.bin', ['not valid UTF-8', 'offset 6']),
], ids=['directory', 'unreadable', 'empty', 'too-short', 'not-utf8'])
def test_bad_input_file(script, make, fragments, tmp_path):
    (tmp_path / 'folder').mkdir()
    (tmp_path / 'small.bin').write_bytes(b'x')
    (tmp_path / 'empty.txt').write_bytes(b'')
    (tmp_path / 'short.txt').write_text('a' * 100)
    (tmp_path / 'latin1.bin').write_bytes(b'hello \xe9t\xe9 ' * 500)
    before = snapshot(tmp_path)
    out = run(script, f'--input_file={make(tmp_path)}', f'--checkpoint={tmp_path / "model.pt"}')
    assert_clear_error(out, *fragments)
    assert snapshot(tmp_path) == before


def test_input_file_without_read_permission(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT))  # (refused as the system would: root, as in CI, may read any file)
    import gpt
    def refused(path, *args):
        raise PermissionError(13, 'Permission denied', path)
    monkeypatch.setattr(gpt, 'open', refused, raising=False)  # (found before the builtin)
    with pytest.raises(gpt.Bad, match='secret.txt: Permission denied; put a text file there'):
        gpt.read_data(str(tmp_path / 'secret.txt'), None)


@pytest.mark.parametrize('script, args, fragment', [
    ('gpt.py', ['--n_layer=-1'], 'n_layer must be positive'),
    ('gpt.py', ['--n_layer=0'], 'n_layer must be positive'),  # a 0 typed by mistake is refused, not chosen
    ('gpt.py', ['--batch_size=0'], 'batch_size must be positive'),
    ('gpt.py', ['--block_size=0'], 'block_size must be positive'),
    ('gpt.py', ['--dropout=-1.0'], 'dropout must be in [0, 1)'),
    ('gpt.py', ['--max_iters=-5'], 'max_iters must be positive'),
    ('gpt.py', ['--n_embd=30', '--n_head=4'], 'must split into n_head'),
    ('gpt.py', ['--n_embd=130'], 'give an n_head that splits it'),  # (no size of the plan's)
    ('gpt.py', ['--n_embd=64', '--n_head=0'], 'n_head must be positive'),  # (no division by 0)
    ('gpt.py', ['--block_size=2000'], 'fewer than the 20010 needed'),
    ('bigram.py', ['--batch_size=0'], 'batch_size must be in [1, 9223372036854775808)'),
    ('bigram.py', ['--block_size=2000'], 'fewer than the 20010 needed'),
    ('gpt.py', ['--lr=auto'], "--lr must be of type float, not 'auto'"),  # only where 'auto' is the default
    ('gpt.py', ['--resume=auto'], "--resume must be of type bool, not 'auto'"),
    ('gpt.py', ['--time_budget=1e400'], "--time_budget must be a finite number, not '1e400'"),
    ('gpt.py', ['--seed={[1]}'], "--seed must be of type int, not '{[1]}'"),  # (a TypeError as Python reads it)
    ('bigram.py', ['--lr=1e400'], 'lr must be in [0, 9223372036854775808)'),  # (1e400 reads as inf)
    *[(script, ['--seed=100000000000000000000000'], 'seed must be in [0, 9223372036854775808)')
      for script in SCRIPTS],
    *[(script, ['--device=meta'], "device 'meta' is not one that") for script in SCRIPTS],
    *[('gpt.py', args, fragment) for args, fragment in [  # refused before training
        (['--sample_file=no/such/folder/sample.txt'], 'sample_file no/such/folder/sample.txt is in a '
                                                      'folder that does not exist'),
        (['--log_file=no/such/folder/log.csv'], 'log_file no/such/folder/log.csv is in a folder'),
        (['--sample_file=.'], 'sample_file . is a folder, not a file'),
        (['--checkpoint='], "checkpoint is empty: it needs a file's path")]],
    ('gpt.py', ['--batch_size=100000000000'], 'out of memory on cpu: try a smaller model or batch'),
    ('gpt.py', ['--n_embd=100000000000000000'], 'out of memory on cpu'),  # (too large to count)
    ('bigram.py', ['--batch_size=100000000000'], "can't allocate memory"),  # (a CPU's allocator)
    # bigram.py, a run of seconds, finds a path it cannot write where it writes, after training
    ('bigram.py', ['--checkpoint=no/such/folder/m.pt'], 'cannot write no/such/folder/m.pt: [Errno 2] No such file'),
    ('bigram.py', ['--checkpoint=.'], 'cannot write .: '),  # (a folder)
    ('bigram.py', ['--checkpoint='], 'cannot write : [Errno 2] No such file'),
    ('gpt.py', ['--time_budget=0.001'], 'the time budget (0.001 s) is spent before training could start'),
])
def test_impossible_setting(script, args, fragment, text_file, tmp_path):
    out = run(script, f'--input_file={text_file}', f'--checkpoint={tmp_path / "m.pt"}', *args)
    assert_clear_error(out, fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.backends.mps.is_available(), reason='a Mac: mps works')
@pytest.mark.parametrize('script', SCRIPTS)
def test_a_device_torch_cannot_use_here_is_one_short_line(script, text_file, tmp_path):
    out = run(script, f'--input_file={text_file}', f'--checkpoint={tmp_path / "m.pt"}', '--device=mps')
    assert_clear_error(out, "device 'mps'")
    assert len(out.stderr) < 400, len(out.stderr)  # (torch's own message runs to thousands of characters)


@pytest.mark.parametrize('error', ['torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")',
                                   'RuntimeError("MPS backend out of memory (MPS allocated: 1 GiB, other '
                                   'allocations: 0 bytes, max allowed: 1 GiB). Tried to allocate 2 GiB")'],
                         ids=['GPU', 'Mac'])
def test_a_size_out_of_memory_while_planning_is_one_line(error, text_file, tmp_path):
    # a GPU says so with torch.OutOfMemoryError, a Mac with a RuntimeError, which the plan takes as a size too large
    # for the machine: where even the smallest is, that is the one line (faked here on the CPU, in the backward of
    # the step timed)
    oom = ('import runpy, sys, warnings; warnings.filterwarnings("ignore", message="Failed to initialize NumPy")\n'
           'import torch; sys.argv = sys.argv[1:]\n'
           f'def out_of_memory(*args, **kwargs):\n    raise {error}\n'
           'torch.autograd.backward = out_of_memory\n'
           'runpy.run_path(sys.argv[0], run_name="__main__")')
    out = subprocess.run([sys.executable, '-c', oom, str(ROOT / 'gpt.py'), '--device=cpu', f'--input_file={text_file}',
                          f'--checkpoint={tmp_path / "m.pt"}', *TINY['gpt.py'][:5]],
                         capture_output=True, text=True, timeout=120)
    assert_clear_error(out, 'out of memory on cpu: try a smaller model or batch')
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_written_to_is_refused_before_training(tmp_path, monkeypatch, capsys):
    # a read-only disk: found out at the first save, the run's time so far would be lost (bigram.py's
    # seconds are not: it finds out where it writes, in one line all the same)
    sys.path.insert(0, str(ROOT))
    module = __import__('gpt')
    monkeypatch.setattr(module, 'checkpoint', str(tmp_path / 'model.pt'))
    monkeypatch.setattr(module.os, 'access', lambda path, mode: path != str(tmp_path))
    with pytest.raises(ValueError, match='is in a folder that cannot be written to'):  # (main: one line, exit 2)
        module.apply_overrides([])


@pytest.mark.parametrize('script', SCRIPTS)
def test_no_run_writes_over_its_text_or_its_checkpoint(script, workdir, text_file):
    ckpt = workdir / CKPT_NAME[script]
    before, text = snapshot(workdir), text_file.read_bytes()
    for setting, path, other in [('checkpoint', text_file, 'input_file'), ('sample_file', text_file, 'input_file'),
                                 ('log_file', ckpt, 'checkpoint'), ('sample_file', ckpt, 'checkpoint')
                                 ][:1 if script == 'bigram.py' else 4]:  # (bigram.py writes the checkpoint only)
        out = run(script, f'--input_file={text_file}', f'--checkpoint={ckpt}', *TINY[script], f'--{setting}={path}')
        assert_clear_error(out, f'{setting} {path} is also the {other}, which writing it would lose')
    assert snapshot(workdir) == before and text_file.read_bytes() == text



def test_the_log_is_on_disk_row_by_row_as_the_run_goes(tmp_path, monkeypatch):
    # a crash or a kill keeps the rows so far: each progress line's row is written before the next step
    import gpt
    rows, forward, log = [], gpt.GPT.forward, tmp_path / 'log.csv'
    def record(model, *args, **kwargs):
        if model.training and log.exists():
            with open(log, newline='', encoding='utf-8') as f:
                rows.append(len(list(csv.DictReader(f))))
        return forward(model, *args, **kwargs)
    monkeypatch.setattr(gpt.GPT, 'forward', record)
    train_in_process(monkeypatch, tmp_path, log_file=str(log), log_interval=1, max_iters=6)
    assert rows == [1, 2, 3, 4, 5]


def test_a_log_that_cannot_be_written_for_a_while_stops_nothing(tmp_path, monkeypatch, capsys):
    # as on Windows while the log is open in Excel: its rows are kept, and the next write puts them all on disk
    log, replace, writes = tmp_path / 'log.csv', os.replace, []
    def locked_for_rows_2_to_4(source, target):
        if target == str(log):
            writes.append(target)
            if 2 <= len(writes) <= 4:
                raise PermissionError(13, 'Permission denied')
        return replace(source, target)
    monkeypatch.setattr(os, 'replace', locked_for_rows_2_to_4)
    run = train_in_process(monkeypatch, tmp_path, log_file=str(log), log_interval=1, max_iters=6)
    assert run.step == 6 and capsys.readouterr().out.count('lacks its newest rows') == 3
    with open(log, newline='', encoding='utf-8') as f:
        assert [row['step'] for row in csv.DictReader(f)] == ['1', '2', '3', '4', '5', '6']


def test_the_log_beside_the_checkpoint_writes_over_no_other_file(workdir, text_file):
    # the log goes beside the checkpoint unless told (m.pt: m.csv), where a text or the sample may be
    notes = workdir / 'notes.csv'
    notes.write_bytes(text_file.read_bytes())
    before = snapshot(workdir)
    for args, fragment in [
            ([f'--input_file={notes}', f'--checkpoint={workdir / "notes.pt"}'], 'notes.csv is also the input_file'),
            ([f'--input_file={text_file}', f'--checkpoint={workdir / "m.csv"}'], 'm.csv is also the checkpoint'),
            ([f'--input_file={text_file}', f'--checkpoint={workdir / "gpt.pt"}', f'--sample_file={workdir / "gpt.csv"}'],
             'gpt.csv is also the log_file')]:
        out = run('gpt.py', *args, *TINY['gpt.py'])
        assert_clear_error(out, fragment, 'which writing it would lose')
    assert snapshot(workdir) == before


def test_sampling_reads_a_checkpoint_in_a_folder_that_cannot_be_written_to(workdir):
    # a dataset mounted read-only (Kaggle's input, a shared drive): sampling writes nothing there
    read_only = ('import os, runpy, sys; readable = os.access; sys.argv = sys.argv[1:]; '
                 'os.access = lambda path, mode: mode != os.W_OK and readable(path, mode); '
                 'runpy.run_path(sys.argv[0], run_name="__main__")')
    before = snapshot(workdir)
    for mode in ('--sample_only=True', '--resume=True'):
        out = subprocess.run([sys.executable, '-c', read_only, str(ROOT / 'gpt.py'), '--device=cpu', mode,
                              f'--checkpoint={workdir / "gpt.pt"}', '--num_chars=50'],
                             capture_output=True, text=True, timeout=60)
        if mode == '--sample_only=True':
            assert out.returncode == 0 and len(out.stdout.split("sample_file=''\n")[1]) > 50, out.stderr
        else:  # (training writes the checkpoint: refused before it starts)
            assert_clear_error(out, 'is in a folder that cannot be written to')
    assert snapshot(workdir) == before

@pytest.mark.parametrize('script', SCRIPTS)
@pytest.mark.parametrize('kind, mode, fragment', [
    ('missing', '--resume=True', 'does not exist'),
    ('truncated', '--sample_only=True', 'truncated or not'),
    ('empty', '--sample_only=True', 'truncated or not a checkpoint (EOFError)'),
    ('not-a-checkpoint', '--resume=True', 'truncated or not'),
    ('other-script', '--sample_only=True', 'checkpoint (it comes from'),
    ('a-folder', '--sample_only=True', 'truncated or not'),  # (not: it does not exist)
    ('a-tensor', '--sample_only=True', 'not a'),  # (torch.load reads it; it is no dict)
])
def test_bad_checkpoint(script, kind, mode, fragment, workdir, text_file):
    path = workdir / 'suspect.pt'
    other = 'gpt.pt' if script == 'bigram.py' else 'bigram.pt'
    mode = '--sample_only=True' if script == 'bigram.py' else mode  # (bigram.py has no resume)
    fragment = 'No such file' if script == 'bigram.py' and kind == 'missing' else fragment  # (torch's words)
    if kind == 'truncated':
        data = (workdir / CKPT_NAME[script]).read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'not-a-checkpoint':
        path.write_text('these are not the weights you are looking for')
    elif kind == 'other-script':
        path.write_bytes((workdir / other).read_bytes())
    elif kind == 'a-folder':
        path.mkdir()
    elif kind == 'a-tensor':
        torch.save(torch.zeros(3), path)
    before = snapshot(workdir)
    out = run(script, f'--input_file={text_file}', f'--checkpoint={path}', mode, *TINY[script],
              fresh=kind == 'a-tensor')  # (torch's warnings print outside pytest)
    assert_clear_error(out, 'suspect.pt', fragment)
    assert snapshot(workdir) == before


@pytest.mark.parametrize('script', SCRIPTS)
def test_checkpoint_from_another_version(script, workdir, text_file):
    path = workdir / 'older.pt'
    ckpt = torch.load(workdir / CKPT_NAME[script], weights_only=True)
    ckpt['model'] = {f'old_{k}': v for k, v in ckpt['model'].items()}  # as if the weights had other names
    torch.save(ckpt, path)
    before = snapshot(workdir)
    for mode in ('--sample_only=True', '--resume=True')[:2 if script == 'gpt.py' else 1]:  # (bigram: no resume)
        out = run(script, f'--input_file={text_file}', f'--checkpoint={path}', mode, *TINY[script])
        assert_clear_error(out, 'older.pt', 'do not fit this model' if script == 'gpt.py' else 'another version')
    assert snapshot(workdir) == before


def test_a_checkpoint_of_an_earlier_version_is_refused_in_one_line(workdir, text_file):
    path = workdir / 'older.pt'  # as the versions before this one wrote it: a setting fewer
    ckpt = torch.load(workdir / 'gpt.pt', weights_only=True)
    del ckpt['settings']['weight_decay']
    torch.save(ckpt, path)
    before = snapshot(workdir)
    for mode in ('--sample_only=True', '--resume=True'):
        out = run('gpt.py', f'--input_file={text_file}', f'--checkpoint={path}', mode, *TINY['gpt.py'])
        assert_clear_error(out, 'older.pt comes from an earlier version of gpt.py', 'train it again')
    with pytest.raises(ValueError, match='earlier version'):
        sys.path.insert(0, str(ROOT))
        __import__('gpt').load(str(path))
    assert snapshot(workdir) == before


@pytest.mark.parametrize('script', SCRIPTS)
@pytest.mark.parametrize('stop, raised, message', [
    # torch.save says a full disk with a RuntimeError ("unexpected pos"), not an OSError: one line, exit 2
    (RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0'), ValueError,
     'cannot write .*model.pt: .*unexpected pos'),
    (KeyboardInterrupt(), KeyboardInterrupt, None)], ids=['full-disk', 'ctrl-c'])
def test_a_write_stopped_halfway_leaves_no_partial_file(script, stop, raised, message, tmp_path):
    sys.path.insert(0, str(ROOT))
    module = __import__(script.removesuffix('.py'))
    path = tmp_path / 'model.pt'
    path.write_bytes(b'the last good checkpoint')
    def halfway(f):
        f.write(b'half a checkpoint')
        raise stop
    with pytest.raises(raised, match=message):
        module.write_atomically(str(path), halfway)
    assert [p.name for p in tmp_path.iterdir()] == ['model.pt']  # (no half-written tmp file)
    assert path.read_bytes() == b'the last good checkpoint'


@pytest.mark.parametrize('script', ['gpt.py'])  # (bigram.py: a table at a sane rate cannot diverge)
@pytest.mark.parametrize('found_by', ['training', 'evaluation'])  # (the first loss read is its)
def test_loss_going_nan_keeps_the_last_good_checkpoint(script, found_by, workdir, text_file):
    before = snapshot(workdir)
    every_step = ['--eval_interval=1', '--log_interval=1000'] if found_by == 'evaluation' else []
    out = run(script, f'--input_file={text_file}', f'--checkpoint={workdir / CKPT_NAME[script]}',
              *TINY[script], '--lr=1e29', '--muon_lr=1e29', *every_step)
    assert snapshot(workdir) == before
    assert_clear_error(out, 'the loss became', 'in an evaluation' if every_step else 'at step',
                       'untouched')


# ---------------------------------------------------------------------- using a checkpoint from Python
@pytest.mark.parametrize('script', SCRIPTS)
def test_loading_a_checkpoint_in_your_own_code_as_readme_shows(script, workdir):
    # README's lines, as written, in a folder with the script and its checkpoint (in a fresh interpreter)
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    section = readme[readme.index('## From your own Python'):]
    code = re.search(r'```python\n(.*?)```', section, re.S)[1]
    if script == 'bigram.py':
        code = code.replace('gpt', 'bigram').replace(', temperature=0.8', '')  # (as README says)
    (workdir / script).write_bytes((ROOT / script).read_bytes())
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, cwd=workdir)
    assert out.returncode == 0 and out.stderr == '', out.stderr
    assert len(out.stdout.strip()) >= 100 and set(out.stdout.strip()) <= set(text_chars(workdir)), out.stdout


def test_load_without_a_path_finds_the_checkpoint_main_writes(workdir, text_file):
    # main writes gpt.pt beside gpt.py, wherever Python runs: load() reads it from there too
    (workdir / 'gpt.py').write_bytes((ROOT / 'gpt.py').read_bytes())
    elsewhere = workdir / 'elsewhere'
    elsewhere.mkdir()
    code = f'import sys; sys.path.insert(0, {str(workdir)!r}); import gpt; print(len(gpt.load()[1]))'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, cwd=elsewhere)
    assert out.returncode == 0 and out.stdout.strip() == str(len(text_chars(workdir))), out.stderr


def text_chars(workdir):  # the vocabulary of the trained checkpoints (test_smoke's text_file)
    return set(torch.load(workdir / 'gpt.pt', weights_only=True)['vocab'])


@pytest.mark.parametrize('script', SCRIPTS)
def test_load_raises_rather_than_exits(script, workdir):
    sys.path.insert(0, str(ROOT))
    module = __import__(script.removesuffix('.py'))
    with pytest.raises(FileNotFoundError):
        module.load(str(workdir / 'nope.pt'))
    (workdir / 'text.pt').write_text('not a checkpoint')
    other = workdir / ('bigram.pt' if script == 'gpt.py' else 'gpt.pt')
    for path in (workdir / 'text.pt', other):
        with pytest.raises(ValueError):
            module.load(str(path))
    model, chars = module.load(str(workdir / CKPT_NAME[script]))
    with pytest.raises(ValueError, match="not in the vocabulary: 'Z§'"):  # (the lecture's KeyError)
        module.sample(model, chars, 'Zebra§', 10)


def test_an_older_torch_is_one_line(tmp_path, text_file):
    # a notebook's preinstalled torch before 2.9
    older = ('import runpy, sys, warnings; warnings.filterwarnings("ignore", message="Failed to initialize NumPy"); '
             'import torch; torch.__version__ = torch.torch_version.TorchVersion("2.8.0"); sys.argv = sys.argv[1:]; '
             'runpy.run_path(sys.argv[0], run_name="__main__")')
    out = subprocess.run([sys.executable, '-c', older, str(ROOT / 'gpt.py'), f'--input_file={text_file}',
                          f'--checkpoint={tmp_path / "m.pt"}', '--device=cpu'],
                         capture_output=True, text=True, timeout=60)
    assert_clear_error(out, 'needs torch 2.9 or later', 'pip install')
    assert list(tmp_path.iterdir()) == []
