"""Data-parallel training with torchrun: two CPU processes (gloo) must train exactly like one process that takes
the same total batch, which only holds if the gradients of the two halves are averaged."""
import subprocess, sys
import pytest
from test_smoke import ROOT, TINY, final_losses, run, step_losses, text_file  # noqa: F401 (text_file: a fixture)


def test_two_processes_train_like_one(tmp_path, text_file):
    common = [f'--input_file={text_file}', '--num_chars=0', *TINY['gpt.py'], '--max_iters=20', '--log_interval=1',
              '--dtype=float32', '--device=cpu']  # float32: the two runs sum in different orders, keep it exact
    one = run('gpt.py', *common, f'--checkpoint={tmp_path / "one.pt"}')
    two = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                          str(ROOT / 'gpt.py'), *common, f'--checkpoint={tmp_path / "two.pt"}'],
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
