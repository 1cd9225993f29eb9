"""How gpt.py plans a run: the largest model that trains enough steps in the time given, as many steps as fit.
The step times are made up here (a step takes its multiply-adds at a fixed rate), so that no test depends on how
fast this machine is; the timing itself is measured by `python bench.py budget`, not tested."""
import math, sys, threading, time
import pytest
import torch
from test_smoke import ROOT

sys.path.insert(0, str(ROOT))
import gpt  # noqa: E402

NAMES = ('n_layer', 'n_head', 'n_embd', 'block_size', 'batch_size')


@pytest.fixture
def machine(monkeypatch):
    """A machine that multiplies at `rate` multiply-adds a second, and the sizes it was asked to time."""
    timed = []
    def time_step(size, vocab_size, precision):
        timed.append(tuple(size[k] for k in NAMES))
        return gpt.work(size) / machine.rate
    machine.rate, machine.timed = 1e10, timed
    monkeypatch.setattr(gpt, 'time_step', time_step)
    for name in NAMES + ('max_iters', 'dropout', 'input_noise', 'weight_decay', 'eval_interval'):
        monkeypatch.setattr(gpt, name, 'auto')
    return machine


def seconds_for(size, steps):  # what `steps` steps of SIZES[size] take on the machine
    return gpt.work(dict(zip(NAMES, gpt.SIZES[size]))) / 1e10 * steps


def test_the_largest_size_that_trains_enough_steps_in_time(machine):
    seconds = seconds_for(4, 1550)  # the fifth size fits the 1,382 steps it needs and their evaluations
    size, step_time, why = gpt.plan_model(65, 10_000_000, {}, 'float32', seconds)
    assert tuple(size[k] for k in NAMES) == gpt.SIZES[4]
    assert step_time == pytest.approx(seconds_for(4, 1))
    assert machine.timed == gpt.SIZES[:5]  # the sixth, 10x slower by its arithmetic, was not worth timing
    assert 'would take about' in why


def test_a_larger_size_reads_enough_characters_for_the_weights_of_its_blocks(machine, monkeypatch):
    # time for MIN_STEPS steps of the fifth size (6 x 256, 4.7M weights in its blocks), but not for the 1,382
    # that read MIN_READ = 0.9 characters for each of them: the fourth (5 x 256, 3.9M) reads its 0.9 and is kept
    size, _, why = gpt.plan_model(65, 10_000_000, {}, 'float32', seconds_for(4, 1200))
    assert tuple(size[k] for k in NAMES) == gpt.SIZES[3] and 'would take 1,382 steps' in why
    monkeypatch.setattr(gpt, 'MIN_READ', 0)
    size, _, _ = gpt.plan_model(65, 10_000_000, {}, 'float32', seconds_for(4, 1200))
    assert tuple(size[k] for k in NAMES) == gpt.SIZES[4]


def test_a_size_timed_too_slow_is_passed_over(machine):
    seconds = seconds_for(1, gpt.MIN_STEPS) * 0.5  # the second size takes twice the time there is
    size, _, why = gpt.plan_model(65, 10_000_000, {}, 'float32', seconds)
    assert tuple(size[k] for k in NAMES) == gpt.SIZES[0]
    assert machine.timed == gpt.SIZES[:2] and 'would take' in why and 'about' not in why
    # time for MIN_STEPS steps of the second size, but not for them and the evaluations between them
    size, _, why = gpt.plan_model(65, 10_000_000, {}, 'float32', seconds_for(1, gpt.MIN_STEPS) * 1.05)
    assert tuple(size[k] for k in NAMES) == gpt.SIZES[0] and 'would take 1,000 steps' in why


def test_a_size_out_of_memory_is_passed_over(machine, monkeypatch):
    # time_step takes a size too large for the device's memory as one that takes forever: a larger size out of
    # memory leaves the one before it (only the smallest out of memory is an error, the one line of main's)
    timed = gpt.time_step
    monkeypatch.setattr(gpt, 'time_step', lambda size, *args: math.inf if machine.timed else timed(size, *args))
    size, _, why = gpt.plan_model(65, 10_000_000, {}, 'float32', seconds_for(4, 1550))
    assert tuple(size[k] for k in NAMES) == gpt.SIZES[0] and 'runs out of memory here' in why


def test_a_slow_machine_still_gets_the_smallest_size(machine):
    size, _, _ = gpt.plan_model(65, 10_000_000, {}, 'float32', seconds_for(0, 300))  # not even MIN_STEPS of the smallest
    assert tuple(size[k] for k in NAMES) == gpt.SIZES[0] and machine.timed == gpt.SIZES[:1]


def test_a_small_text_gets_a_smaller_model_on_shorter_windows(machine, monkeypatch):
    # a text that gives the second size fewer than MIN_STEPS steps in max_passes passes, however fast the machine
    n_train = gpt.MIN_STEPS * 12 * 256 / gpt.max_passes * 0.9
    monkeypatch.setattr(gpt, 'MAX_PARAMS', math.inf)  # (the passes alone decide here)
    size, _, why = gpt.plan_model(65, int(n_train / 0.9), {}, 'float32', 1e9)
    assert tuple(size[k] for k in NAMES) == gpt.SIZES[0] and size['block_size'] == 128 and 'too small' in why
    monkeypatch.setattr(gpt, 'MAX_PARAMS', 14)
    # the longer window learns 50,000 characters by heart, and does better from 100,000 (TUNING.md); there the
    # 4 x 192 would have 27 parameters a training character, more than MAX_PARAMS
    size, _, why = gpt.plan_model(65, 100_000, {}, 'float32', 1e9)
    assert (size['n_embd'], size['block_size']) == (128, 256) and 'too small' in why
    # room for MIN_STEPS steps of the larger sizes, but more than MAX_PARAMS parameters a character for them
    size, _, why = gpt.plan_model(62, 250_000, {}, 'float32', 1e9)
    assert (size['n_embd'], size['block_size']) == (192, 256) and 'too small' in why


def test_sizes_given_are_kept_and_each_process_takes_a_whole_batch(machine, monkeypatch):
    monkeypatch.setattr(gpt, 'WORLD', 5)  # five processes train five batches a step, each one device's
    size, _, _ = gpt.plan_model(65, 10_000_000, {'n_layer': 2}, 'float32', seconds_for(1, gpt.MIN_STEPS) * 1.1)
    assert size['n_layer'] == 2 and size['batch_size'] == gpt.SIZES[1][4]
    # a batch given is each process's, also where a text too small for five whole batches would split the plan's
    kept, _, _ = gpt.plan_model(65, 300_000, {'batch_size': 24}, 'float32', 1e9)
    assert kept['batch_size'] == 24
    n_train = 5_000_000
    planned = gpt.plan_training(n_train, size, {}, 0.1, 1e9, 65)
    assert planned['max_iters'] == math.ceil(gpt.max_passes * n_train / (5 * 12 * 256))
    machine.timed.clear()
    given = dict(zip(NAMES, (2, 2, 32, 16, 10)), max_iters=10)
    size, step_time, why = gpt.plan_model(65, 10_000_000, given, 'float32', 1.0)
    assert size == dict(zip(NAMES, (2, 2, 32, 16, 10))) and step_time is None and why == 'as given'
    assert machine.timed == []  # nothing left to time: passing the printed values back involves no clock


def test_several_processes_on_a_small_text_each_take_a_share_of_the_batch(machine, monkeypatch):
    # 8 GPUs, each a whole batch of 64, would see Tiny Shakespeare 100 times in fewer than MIN_STEPS steps: the plan
    # keeps the model one GPU gets, and gives each process an eighth of its batch
    one, _, _ = gpt.plan_model(65, 1_115_394, {}, 'float32', 1e9)
    monkeypatch.setattr(gpt, 'WORLD', 8)
    eight, _, why = gpt.plan_model(65, 1_115_394, {}, 'float32', 1e9)
    assert tuple(one[k] for k in NAMES) == gpt.SIZES[-1] and 'too small' not in why
    assert tuple(eight[k] for k in NAMES) == gpt.SIZES[-1][:4] + (8,)
    big, _, _ = gpt.plan_model(65, 100_000_000, {}, 'float32', 1e9)  # a large text: a whole batch each
    assert tuple(big[k] for k in NAMES) == gpt.SIZES[-1]
    monkeypatch.setattr(gpt, 'WORLD', 5)  # a share rounded up: 13 of 64 each, not 12
    monkeypatch.setattr(gpt, 'max_passes', 50.0)  # (at 100, 5 whole batches fit this text)
    five, _, _ = gpt.plan_model(65, 1_115_394, {}, 'float32', 1e9)
    assert tuple(five[k] for k in NAMES) == gpt.SIZES[-1][:4] + (13,)


def test_the_steps_fill_the_time_left_after_evaluations(machine):
    n_train, step_time, seconds = 5_000_000, 0.1, 300.0  # a large text: about 2 passes, no dropout
    plan = gpt.plan_training(n_train, dict(zip(NAMES, gpt.SIZES[1])), {}, step_time, seconds, 65)
    tokens = 12 * 256
    evaluated = min(n_train // 9, gpt.eval_chars)  # an evaluation reads at most eval_chars
    every = round(10 * evaluated / tokens)
    eval_time = evaluated / tokens * step_time / 3  # a forward pass over a batch: about a third of a step
    spent = plan['max_iters'] * step_time + (plan['max_iters'] / every + 3) * eval_time  # (the end's three)
    assert plan['eval_interval'] == every and plan['dropout'] == 0.0
    assert seconds - step_time - eval_time / every < spent <= seconds  # (one step more would not fit)


def test_dropout_and_weight_decay_follow_the_passes_and_the_model(machine, monkeypatch):
    for name, value in dict(time_budget=300.0, WORLD=1, dtype='float32').items():
        monkeypatch.setattr(gpt, name, value)
    machine.rate = gpt.work(dict(zip(NAMES, gpt.SIZES[2]))) / 0.15  # 4 x 192 at 150 ms a step
    text = torch.zeros(622_222, dtype=torch.uint8)  # 560,000 characters to train on: 8 to 12.5 passes
    settings, why = gpt.plan(65, text, None, time.time())
    n_train, size = int(0.9 * len(text)), dict(zip(NAMES, gpt.SIZES[2]))
    assert {k: settings[k] for k in NAMES} == size and machine.timed[-2:] == gpt.SIZES[2:4]  # (the next too slow)
    # 2.6M parameters, 4.6 a training character: 8 to 12.5 passes are below 64, no dropout
    assert 8 <= settings['max_iters'] * 12 * 256 / n_train < 12.5 and settings['dropout'] == 0.0
    assert settings['input_noise'] == 0.0
    assert settings['weight_decay'] == 0.3  # (0.1 a doubling from one pass, up to 0.3 at 8 passes)
    twenty = gpt.plan_training(450_000, size, {}, 0.1, 300.0, 65)  # about 20 passes: 116
    assert 16 < twenty['max_iters'] * 12 * 256 / 450_000 < 25 and twenty['dropout'] == 0.1
    assert twenty['input_noise'] == 0.05  # (from 64 on, as dropout)
    assert gpt.plan_training(100_000, size, {}, 0.1, 300.0, 65)['dropout'] == 0.3  # 40 passes and more
    # the same 14 passes over 225,000 characters: the 4 x 192 could learn them by heart, the 3 x 128
    # (1.1M parameters, 4.9 a character: 69) hardly
    small = dict(zip(NAMES, gpt.SIZES[0]))
    fourteen = [gpt.plan_training(225_000, s, dict(max_iters=1028), 0.1, 300.0, 62) for s in (size, small)]
    assert [plan['dropout'] for plan in fourteen] == [0.1, 0.0]
    assert [plan['input_noise'] for plan in fourteen] == [0.05, 0.05]  # (69: a few characters replaced)
    large = gpt.plan_training(5_000_000, size, {}, 0.1, 300.0, 65)  # fewer than 8: about 1.8 passes
    passes = large['max_iters'] * 12 * 256 / 5_000_000
    assert large['dropout'] == large['input_noise'] == 0.0
    assert large['weight_decay'] == round(0.1 * math.log2(passes), 2) > 0
    seen_once = gpt.plan_training(50_000_000, size, {}, 0.1, 300.0, 65)  # a fraction of a pass: none
    assert seen_once['weight_decay'] == 0.0
    assert why['refit']['planned'] == pytest.approx(0.15)  # (the steps are fitted to the step as it runs)


def test_a_quick_try_shortens_the_run_and_keeps_the_model(machine):
    # --max_iters=10 asks for fewer steps of the run the plan would choose, not for the largest model that 10
    # steps allow (on a 2-core CPU that was 10 s a step)
    seconds = seconds_for(1, gpt.MIN_STEPS) * 1.2  # the second size fits MIN_STEPS steps, the third does not
    planned, _, _ = gpt.plan_model(65, 10_000_000, {}, 'float32', seconds)
    quick, _, _ = gpt.plan_model(65, 10_000_000, {'max_iters': 10}, 'float32', seconds)
    assert tuple(quick[k] for k in NAMES) == tuple(planned[k] for k in NAMES) == gpt.SIZES[1]
    training = gpt.plan_training(5_000_000, quick, {'max_iters': 10}, 0.1, seconds, 65)
    assert training['max_iters'] == 10


def test_timing_a_size_leaves_every_setting_as_it_was():
    before = {k: getattr(gpt, k) for k in gpt.SETTINGS}
    step_time = gpt.time_step(dict(zip(NAMES, (2, 2, 32, 16, 4))), 65, 'float32')
    assert 0 < step_time < 5
    assert {k: getattr(gpt, k) for k in gpt.SETTINGS} == before


def test_a_planned_run_is_refitted_to_its_step_as_it_runs(monkeypatch):
    # the plan timed 100 ms a step at start-up; after warm-up the progress lines read 200: the steps left are
    # those that 200 ms a step fit into the time left, evaluations included; the same again changes nothing
    for name, value in dict(batch_size=24, block_size=128, eval_interval=363).items():
        monkeypatch.setattr(gpt, name, value)
    refit = dict(planned=0.1, n_train=1_000_000, deadline=time.time() + 90, seconds=0.0,
                 steps=0, refitted=False)
    run = gpt.Run('', [], None, steps=1000, step=100, refit=refit)
    gpt.refit(run, 0.2, 50)
    eval_time = 111_111 / (24 * 128) * 0.2 / 3  # a ninth of the text, forward only
    left = (90 - 3 * eval_time) / (0.2 + eval_time / 363)  # about 400 steps (the end evaluates 3 times)
    assert abs(run.steps - 100 - left) <= 2 and gpt.max_iters == 'auto'  # (the run's, not the setting)
    steps = run.steps
    run.step, refit['deadline'] = 150, refit['deadline'] - 50 * 0.2  # 50 steps later (10 s less left), on time:
    gpt.refit(run, 0.2, 50)
    assert run.steps == steps  # left as it is
    run.step, refit['deadline'] = 200, refit['deadline'] - 50 * 0.3  # then 50 steps of 300 ms: fewer fit
    gpt.refit(run, 0.3, 50)
    mean = (0.2 * 100 + 0.3 * 50) / 150  # the mean since warm-up, not the last interval's
    eval_time = 111_111 / (24 * 128) * mean / 3
    left = (refit['deadline'] - time.time() - 3 * eval_time) / (mean + eval_time / 363)
    assert run.steps < steps and abs(run.steps - 200 - left) <= 2


def test_a_run_is_refitted_from_warm_up_but_not_at_its_last_step(monkeypatch):
    # its learning rate has come down to 0 there: more steps would train on at a rate raised again; a short run
    # is refitted from its first progress line
    for name, value in dict(batch_size=24, block_size=128, eval_interval=363, log_file='').items():
        monkeypatch.setattr(gpt, name, value)
    # before the end, at it, a short run at its first progress line (whose interval began at step 0), and a
    # long run's first progress line, still in warm-up
    for step, steps, longer in [(900, 1000, True), (1000, 1000, False), (50, 67, True), (50, 1000, False)]:
        refit = dict(planned=0.1, n_train=1_000_000, deadline=time.time() + 900, seconds=0.0, steps=0,
                     refitted=False)
        monkeypatch.setattr(gpt, 'max_iters', steps)
        run = gpt.Run('', [], None, steps=steps, step=step, refit=refit)
        run.ticked = time.time() - 5, step - 50  # 100 ms a step, with 15 minutes left
        gpt.check_in(run, torch.tensor(2.0), threading.Event())
        assert (run.steps > steps) == longer, (step, run.steps)


def test_a_run_out_of_time_or_passes_is_never_refitted_longer(monkeypatch):
    # at its last step with no time left, or with max_passes' steps trained, a run ends where it is
    for name, value in dict(batch_size=24, block_size=128, eval_interval=363).items():
        monkeypatch.setattr(gpt, name, value)
    refit = dict(planned=0.1, n_train=1_000_000, deadline=time.time() - 1, seconds=0.0, steps=0, refitted=True)
    run = gpt.Run('', [], None, steps=19, step=19, refit=refit)
    gpt.refit(run, 0.2, 19)
    assert run.steps == 19
    refit.update(n_train=500, deadline=time.time() + 1000)  # time enough, but 100 passes are 17 steps
    gpt.refit(run, 0.2, 19)
    assert run.steps == 19
