"""Run every script as a user would: a subprocess, tiny settings, a small text written here, on the CPU."""
import hashlib, http.server, math, os, platform, re, runpy, signal, socket, subprocess, sys, tempfile
import threading, time, traceback
from pathlib import Path
import pytest
import torch

ROOT = Path(__file__).resolve().parent
SHARED_TEXT = ROOT.parent / 'shared' / 'input.txt'  # Tiny Shakespeare, for machines without internet
TINY = {  # settings small enough to train in seconds
    'bigram.py': ['--block_size=16', '--batch_size=16', '--max_iters=60', '--eval_interval=20'],
    'gpt.py': ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=16', '--max_iters=60',
               '--warmup_iters=5', '--eval_interval=30', '--log_interval=10'],
}
SCRIPTS = list(TINY)


def environment():  # what a new interpreter would start with (pytest names the test running in it)
    return {k: v for k, v in os.environ.items() if k != 'PYTEST_CURRENT_TEST'}


ENVIRONMENT = environment()  # as the tests start (conftest.py has set one thread for torch)


def run(script, *args, cwd=None, timeout=120, fresh=False):
    """`python script --device=cpu args`, as a user runs it: the script as __main__ from its file, with its own
    arguments, stdout, stderr and exit status. In a new interpreter where asked (fresh) or where a test changed
    the environment (which torch and Python read as they start); otherwise in a fork of this one, where torch is
    imported already: of a tiny run's 5 s, a new interpreter spends 4 importing torch and torch._dynamo."""
    argv = [str(script if Path(str(script)).is_absolute() else ROOT / script), '--device=cpu', *args]
    if fresh or environment() != ENVIRONMENT:
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                sys.stdin = open(os.devnull)
                sys.stdout = open(1, 'w', encoding='utf-8', closefd=False)  # block-buffered, as into a pipe
                sys.stderr = open(2, 'w', encoding='utf-8', closefd=False, buffering=1)
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
                os.chdir(cwd or os.getcwd())
                sys.argv = argv
                try:
                    runpy.run_path(argv[0], run_name='__main__')
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                    if not isinstance(e.code, (int, type(None))):
                        print(e.code, file=sys.stderr)
                except BaseException:
                    traceback.print_exc()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
        deadline = time.time() + timeout
        while not (done := os.waitpid(pid, os.WNOHANG))[0]:
            if time.time() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise subprocess.TimeoutExpired(argv, timeout)
            time.sleep(0.01)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(done[1]),
                                           out.read().decode('utf-8', 'replace'), err.read().decode('utf-8', 'replace'))


def train_in_process(monkeypatch, tmp_path, **settings):
    """gpt.py's training loop, in this process, on a tiny model and random characters: for the tests that watch
    what the loop does at each step (settings: gpt.py's, as monkeypatched for the test). Returns the run."""
    sys.path.insert(0, str(ROOT))
    import gpt
    tiny = dict(device='cpu', dtype='float32', patience=0.0, block_size=8, batch_size=4, max_iters=12,
                input_noise=0.0, weight_decay=0.1, eval_interval=1000, log_interval=1000, log_file='', checkpoint=str(tmp_path / 'gpt.pt'))
    for name, value in {**tiny, **settings}.items():
        monkeypatch.setattr(gpt, name, value)
    torch.manual_seed(0)
    model = gpt.GPT(gpt.Config(12, n_layer=1, n_head=2, n_embd=16, block_size=8, pair_rows=64, dropout=0.0))
    run = gpt.start_run(model, 'abcdefghijkl', None)
    data = torch.randint(12, (2000,), dtype=torch.uint8)
    gpt.train(model, run, data, data[:200])
    return run


def final_losses(stdout):
    match = re.search(r'^final: train loss (\d+\.\d{4}), val loss (\d+\.\d{4})$', stdout, re.M)
    assert match, f'no final: line in\n{stdout}'
    return float(match[1]), float(match[2])


@pytest.fixture(scope='session')
def text_file(tmp_path_factory):
    """A small text with plenty to learn: a few verses repeated with variations."""
    lines = ['the quick brown fox jumps over the lazy dog.', 'to be, or not to be: that is the question!',
             'now is the winter of our discontent;', 'all the world is a stage, and all the men players.',
             'ROMEO: but soft, what light through yonder window breaks?']
    text = '\n'.join(f'{lines[i % 5]} {i % 7}' for i in range(300)) + '\n'
    path = tmp_path_factory.mktemp('text') / 'small.txt'
    path.write_text(text, encoding='utf-8')
    return path


@pytest.mark.parametrize('script', SCRIPTS)
def test_trains_end_to_end(script, text_file, tmp_path):
    ckpt, sample = tmp_path / 'model.pt', tmp_path / 'sample.txt'
    to_file = [f'--sample_file={sample}'] if script == 'gpt.py' else []  # (bigram.py prints it only)
    out = run(script, f'--input_file={text_file}', f'--checkpoint={ckpt}', *to_file,
              '--num_chars=200', *TINY[script], fresh=True)  # (fresh: all that a new process says on stderr)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ''  # a normal run says nothing on stderr (torch without numpy would warn there)
    vocab = set(text_file.read_text(encoding='utf-8'))
    train, val = final_losses(out.stdout)
    assert val < math.log(len(vocab)) - 1.0, f'val loss {val} is not clearly below a uniform guess'
    assert 'tokens/s' in out.stdout and 'ms/step' in out.stdout  # the progress lines
    printed = out.stdout.split(f'saved {ckpt}\n')[-1]  # what follows training's last line: the sample
    generated = sample.read_text(encoding='utf-8') if to_file else printed.removesuffix('\n')
    assert len(generated) == 201 and set(generated) <= vocab  # the first character plus 200 new ones
    assert printed == generated + '\n' and ckpt.is_file()
    assert script == 'bigram.py' or (tmp_path / 'model.csv').is_file()  # (and its log; bigram.py keeps none)


def test_attention_trick_checks_pass():
    out = subprocess.run([sys.executable, str(ROOT / 'attention_trick.py')], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == '', out.stdout + out.stderr
    assert len(re.findall(r'check passed', out.stdout)) >= 6 and 'FAILED' not in out.stdout
    assert [int(n) for n in re.findall(r'^(\d)\. ', out.stdout, re.M)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize('script', SCRIPTS)
@pytest.mark.parametrize('arg, message', [('--no_such_setting=3', 'is not --name=value for a known name'),
                                          ('--seed', "'--seed' is not --name=value"),
                                          ('--max_iters=fast', '--max_iters must be of type int')])
def test_bad_override_exits_2(script, arg, message):
    out = run(script, arg, fresh=True)
    assert out.returncode == 2 and message in out.stderr and 'valid settings: input_file' in out.stderr
    assert 'Traceback' not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize('script', SCRIPTS)
def test_an_exit_from_bad_input_carries_no_chained_error(script, monkeypatch, capsys):
    # IPython before 8.27 (Colab's) prints a wall of its own internals for an exit chained to another error
    monkeypatch.setattr(sys, 'argv', [str(ROOT / script), '--no_such_setting=3'])
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(str(ROOT / script), run_name='__main__')  # (as pasted into a cell and run)
    assert exit.value.code == 2 and exit.value.__suppress_context__ and exit.value.__cause__ is None
    assert 'for a known name' in capsys.readouterr().err


@pytest.mark.parametrize('script', SCRIPTS)
def test_a_bug_keeps_its_traceback(script, text_file, tmp_path, monkeypatch):
    # an error of torch's that is not out of memory, as a learner's edit makes: not one line, but where it is
    def broken(*args, **kwargs):
        raise RuntimeError('mat1 and mat2 shapes cannot be multiplied (16x65 and 64x65)')
    monkeypatch.setattr(torch.nn.functional, 'cross_entropy', broken)
    monkeypatch.setattr(sys, 'argv', [str(ROOT / script), f'--input_file={text_file}', '--device=cpu',
                                      f'--checkpoint={tmp_path / "m.pt"}', *TINY[script]])
    with pytest.raises(RuntimeError, match='mat1 and mat2'):
        runpy.run_path(str(ROOT / script), run_name='__main__')


@pytest.mark.parametrize('script', SCRIPTS)
def test_the_settings_are_the_names_the_settings_part_assigns(script):
    # named in a list (a notebook's earlier names keep their places in globals()), which must follow the part
    source = (ROOT / script).read_text(encoding='utf-8')
    part = source[source.index(' settings'):]
    part = part[:part.index('\n# ---')]
    namespace = runpy.run_path(str(ROOT / script), run_name='not_main')
    assert list(namespace['SETTINGS']) == re.findall(r'^([a-z]\w*) += ', part, re.M)  # (not SETTINGS)


@pytest.mark.parametrize('script', SCRIPTS)
def test_missing_input_file_is_a_clear_error(script, tmp_path):
    out = run(script, f'--input_file={tmp_path / "nope.txt"}')
    assert out.returncode == 2 and 'Traceback' not in out.stderr
    assert 'nope.txt: No such file or directory' in out.stderr and '--input_file=PATH' in out.stderr


@pytest.mark.skipif(not SHARED_TEXT.is_file(), reason='../shared/input.txt (Tiny Shakespeare) is not here')
def test_bigram_reaches_the_best_bigram_loss(tmp_path):
    out = run('bigram.py', f'--input_file={SHARED_TEXT}', f'--checkpoint={tmp_path / "b.pt"}', '--num_chars=10')
    assert out.returncode == 0, out.stderr
    val_loss = final_losses(out.stdout)[1]
    # the same split as bigram.py's, and the same pairs scored: each validation character and the one after it,
    # in bigram.py's windows of 256 that fit (a bigram reads only the current character, so the windows cut nothing)
    text = SHARED_TEXT.read_text(encoding='utf-8')
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    V = len(stoi)
    data = torch.tensor([stoi[c] for c in text])
    train, val = data[:int(0.9 * len(data))], data[int(0.9 * len(data)):]
    n = (len(val) - 1) // 256 * 256
    scored = torch.bincount(val[:n] * V + val[1:n + 1], minlength=V * V).view(V, V).double()  # [a, b]: b after a
    # the floor: on these pairs no table of next-character probabilities beats their own frequencies (2.373), so a
    # model that scores below it sees more than the current character
    seen = scored > 0
    floor = -(scored * (scored / scored.sum(1, keepdim=True)).log())[seen].sum() / scored.sum()
    assert floor <= val_loss, (floor.item(), val_loss)
    # what a bigram model learned from the training split can reach: that split's counts, add-one smoothed (2.482;
    # the best of k = 0.1, 0.3, 1, 3 for add-k). Not a theorem on the lower side, but a table that had seen the
    # validation text would come close to the floor instead (2.378 when bigram.py trained on it, measured)
    counts = torch.bincount(train[:-1] * V + train[1:], minlength=V * V).view(V, V).double() + 1
    smoothed = -(scored * (counts / counts.sum(1, keepdim=True)).log()).sum() / scored.sum()
    assert smoothed - 0.02 <= val_loss <= smoothed + 0.005, (val_loss, smoothed.item())


def test_a_large_validation_split_is_read_in_part_and_the_final_line_says_so(text_file, tmp_path):
    # past eval_chars an evaluation reads that many characters, in windows evenly spread, and the final line says so
    args = [f'--input_file={text_file}', f'--checkpoint={tmp_path / "m.pt"}', '--num_chars=0', *TINY['gpt.py'],
            '--max_iters=10']
    whole, part = run('gpt.py', *args), run('gpt.py', *args, '--eval_chars=96')
    assert whole.returncode == part.returncode == 0, part.stderr
    text = text_file.read_text(encoding='utf-8')
    final_losses(whole.stdout)  # (nothing after the val loss)
    n_val = len(text) - int(0.9 * len(text))
    note = rf' \(on 96 of {n_val:,} validation characters, evenly spread\)$'  # 3 windows of 32
    assert re.search(r'^final: train loss [\d.]+, val loss [\d.]+' + note, part.stdout, re.M), part.stdout


def test_kv_cache_gives_the_same_logits(monkeypatch):
    sys.path.insert(0, str(ROOT))
    import gpt
    torch.manual_seed(0)
    model = gpt.GPT(gpt.Config(20, n_layer=2, n_head=2, n_embd=32, block_size=32, pair_rows=gpt.pair_rows,
                               dropout=0.0)).eval()
    idx = torch.randint(20, (1, 32))
    with torch.no_grad():
        full = model(idx)  # every position's logits, the whole window at once
        caches = [[] for _ in model.blocks]  # a prompt of 8, then one character at a time through the cache
        stepped = torch.cat([model(idx[:, :8], caches=caches)] +
                            [model(idx[:, t:t + 1], caches=caches, start=t, before=idx[:, t - 1:t])
                             for t in range(8, 32)], dim=1)
    assert torch.allclose(full, stepped, atol=1e-5), (full - stepped).abs().max()
    # greedy (temperature 0), so that both generations must pick the same characters
    assert torch.equal(model.generate(idx[:, :5], 40, 0.0, use_cache=True),
                       model.generate(idx[:, :5], 40, 0.0, use_cache=False))


def test_kv_cache_past_the_window_predicts_from_fresh_windows(monkeypatch):
    # well past block_size, every prediction must be the model's output on a fresh window of at most block_size
    # characters (as in training), cached or not; a cache that slides its window along would differ from layer 2 on
    sys.path.insert(0, str(ROOT))
    import gpt
    torch.manual_seed(0)
    block_size = 16
    model = gpt.GPT(gpt.Config(20, n_layer=2, n_head=2, n_embd=32, block_size=block_size,
                               pair_rows=gpt.pair_rows, dropout=0.0)).eval()
    with torch.no_grad():
        for p in model.parameters():  # large random weights: every prediction depends on its whole context
            p.normal_(std=0.3)
    prompt, n = torch.randint(20, (1, 5)), 100
    seen = []  # the logits of every prediction, in the order made
    monkeypatch.setattr(gpt, 'pick_next', lambda logits, *_: seen.append(logits) or logits.argmax(-1, keepdim=True))
    cached = model.generate(prompt, n, use_cache=True)
    recomputed = model.generate(prompt, n, use_cache=False)
    assert torch.equal(cached, recomputed)
    # the reference: a window that grows to block_size characters, then starts again from its last half
    begin, reference = 0, []
    with torch.no_grad():
        for t in range(5, 5 + n):  # predicting cached[:, t]
            if t - begin > block_size:
                begin = t - block_size // 2
            reference.append(model(cached[:, begin:t])[:, -1])
    assert begin > 4 * block_size  # it did go well past the window
    for i, (with_cache, without, expected) in enumerate(zip(seen[:n], seen[n:], reference)):
        assert torch.allclose(with_cache, expected, atol=1e-4), (i, (with_cache - expected).abs().max())
        assert torch.allclose(without, expected, atol=1e-4), (i, (without - expected).abs().max())


# ---------------------------------------------------------------------- fetching Tiny Shakespeare
def serve(body):
    """A one-file HTTP server on 127.0.0.1; returns its URL and a function that stops it."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f'http://127.0.0.1:{server.server_port}/input.txt', server.shutdown


def lone_script(folder, url, script):  # a copy of the script that fetches from url, in a folder with no input.txt
    source = (ROOT / script).read_text(encoding='utf-8')
    assert source.count('\nSHA256 = ') == 1  # (its URL is set just before)
    (folder / script).write_text(source.replace('\nSHA256 = ', f'\nURL = {url!r}\nSHA256 = '), encoding='utf-8')
    return folder / script  # (run there, its files go there)


@pytest.mark.parametrize('script', SCRIPTS)
def test_a_byte_order_mark_is_not_a_character_of_the_text(script, text_file, tmp_path, monkeypatch):
    # Windows' Notepad starts a UTF-8 file with one (U+FEFF): the text begins after it
    sys.path.insert(0, str(ROOT))
    module = __import__(script.removesuffix('.py'))
    path = tmp_path / 'notepad.txt'
    path.write_text(text_file.read_text(encoding='utf-8'), encoding='utf-8-sig')
    read = module.read_text(str(path)) if script == 'bigram.py' else module.read_data(str(path), None)[0]
    assert '\ufeff' not in read and set(read) == set(text_file.read_text(encoding='utf-8'))


@pytest.mark.skipif(not SHARED_TEXT.is_file(), reason='../shared/input.txt (Tiny Shakespeare) is not here')
@pytest.mark.parametrize('script', SCRIPTS)
def test_download_writes_the_checked_file(script, tmp_path):
    url, stop = serve(SHARED_TEXT.read_bytes())
    try:
        out = run(lone_script(tmp_path, url, script), *TINY[script], '--max_iters=2', '--num_chars=5', cwd=tmp_path)
    finally:
        stop()
    assert out.returncode == 0, out.stderr
    assert 'downloaded Tiny Shakespeare' in out.stdout and 'sha256 checked' in out.stdout
    written = tmp_path / 'input.txt'
    assert hashlib.sha256(written.read_bytes()).hexdigest() == hashlib.sha256(SHARED_TEXT.read_bytes()).hexdigest()
    name = script.removesuffix('.py')
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f'{name}.pt', script, 'input.txt',
                                                                 *['gpt.csv'] * (script == 'gpt.py')])


@pytest.mark.parametrize('script', SCRIPTS)
def test_download_with_wrong_checksum_writes_nothing(script, tmp_path):
    url, stop = serve(b'not Shakespeare at all\n' * 100)
    try:
        out = run(lone_script(tmp_path, url, script), cwd=tmp_path)
    finally:
        stop()
    assert out.returncode == 2 and 'invalid hash value' in out.stderr and '--input_file=PATH' in out.stderr
    assert 'Traceback' not in out.stderr
    assert [p.name for p in tmp_path.iterdir()] == [script]  # no input.txt, no temp file


@pytest.mark.parametrize('script', SCRIPTS)
def test_download_from_a_refusing_server_is_a_clear_error(script, tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = run(lone_script(tmp_path, f'http://127.0.0.1:{port}/input.txt', script), cwd=tmp_path)
    assert out.returncode == 2 and 'Traceback' not in out.stderr
    assert 'downloading' in out.stderr and 'failed' in out.stderr and '--input_file=PATH' in out.stderr
    assert [p.name for p in tmp_path.iterdir()] == [script]


# ---------------------------------------------------------------------- precision
AVX2 = {'ONEDNN_MAX_CPU_ISA': 'AVX2', 'ATEN_CPU_CAPABILITY': 'avx2'}  # as on a CPU without bfloat16


@pytest.mark.skipif(platform.machine() not in ('x86_64', 'AMD64'), reason='the AVX2 cap is an x86 setting')
def test_a_cpu_without_bfloat16_trains_in_float32(text_file, tmp_path, monkeypatch):
    for name, value in AVX2.items():
        monkeypatch.setenv(name, value)
    out = run('gpt.py', f'--input_file={text_file}', f'--checkpoint={tmp_path / "m.pt"}', '--num_chars=0',
              *TINY['gpt.py'], '--max_iters=5')
    assert out.returncode == 0, out.stderr
    assert re.search(r'^device cpu, dtype float32 \(bfloat16 is emulated on this CPU', out.stdout, re.M), out.stdout
    assert "dtype='float32'" in out.stdout  # the settings line: passing it back repeats the run


@pytest.mark.skipif(torch.version.cuda is not None, reason='a CUDA build of torch, told of a GPU that is not there, '
                    'goes to the driver itself: the fake needs a CPU build')
def test_a_gpu_machine_told_to_use_the_cpu_trains_the_cpus_model(text_file, tmp_path):
    # as if CUDA were here: --device=cpu (or cpu:0, the same) must choose as on any CPU (its precision by timing)
    fake_gpu = ('import runpy, sys, torch; torch.cuda.is_available = lambda: True; sys.argv = sys.argv[1:]; '
                'torch.cuda.is_current_stream_capturing = lambda: False; '  # (asked by the optimizers' step)
                'runpy.run_path(sys.argv[0], run_name="__main__")')
    args = [f'--input_file={text_file}', f'--checkpoint={tmp_path / "m.pt"}', '--num_chars=0', *TINY['gpt.py'],
            '--max_iters=1']
    out = subprocess.run([sys.executable, '-c', fake_gpu, str(ROOT / 'gpt.py'), '--device=cpu:0', *args],
                         capture_output=True, text=True, timeout=120, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('device cpu,') and " device='cpu' " in out.stdout
    assert re.search(r'^device cpu, dtype \w+ \((native|bfloat16 is emulated) on this CPU', out.stdout, re.M)
    on_the_gpu = subprocess.run([sys.executable, '-c', fake_gpu, str(ROOT / 'gpt.py'), *args], capture_output=True,
                                text=True, timeout=120)
    assert on_the_gpu.returncode == 2 and "device 'cuda' cannot be used here" in on_the_gpu.stderr  # no CUDA really


def step_losses(stdout):
    return re.findall(r'^step (\d+)/\d+ \| loss (\d+\.\d+)', stdout, re.M)


# ---------------------------------------------------------------------- your own text
def run_on_noise(tmp_path, *args):
    # random letters: nothing to learn past their frequencies, so every pass over the training split only
    # memorises it, and the val loss turns up almost at once
    rng = torch.Generator().manual_seed(0)
    path = tmp_path / 'noise.txt'
    path.write_text(''.join('abcdefgh \n'[i] for i in torch.randint(10, (6000,), generator=rng)), encoding='utf-8')
    out = run('gpt.py', f'--input_file={path}', f'--checkpoint={tmp_path / "m.pt"}', '--num_chars=0', '--n_layer=2',
              '--n_head=2', '--n_embd=64', '--block_size=32', '--batch_size=16', '--max_iters=150', '--dropout=0.0',
              '--warmup_iters=5', '--eval_interval=10', *args)
    assert out.returncode == 0, out.stderr
    return out


def test_an_over_trained_text_ends_with_its_best_model(tmp_path):
    out = run_on_noise(tmp_path, '--log_file=', '--patience=0')  # (to the last step)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.pt', 'noise.txt']  # --log_file=: no log
    evaluated = [float(v) for v in re.findall(r'^step \d+: val loss (\d+\.\d+)', out.stdout, re.M)]
    at_the_end = float(re.search(r'^val loss (\d+\.\d+) at the end, .*: keeping it$', out.stdout, re.M)[1])
    assert len(evaluated) == 14 and at_the_end > min(evaluated)  # it did over-train
    assert final_losses(out.stdout)[1] == min(evaluated)  # and reports the best model
    ckpt = torch.load(tmp_path / 'm.pt', weights_only=True)
    best_val, best_step, best_weights = ckpt['best']
    assert f'{best_val:.4f}' == f'{min(evaluated):.4f}' and best_step == 10 * (evaluated.index(min(evaluated)) + 1)
    for name, weight in ckpt['model'].items():  # what it saved is that model
        assert torch.equal(weight, best_weights[name]), name


def test_a_run_with_nothing_more_to_gain_ends_with_its_best_model(tmp_path):
    # past a fifth of the run (patience) without a better val loss, the run ends there
    out = run_on_noise(tmp_path)
    evaluated = re.findall(r'^step (\d+): val loss (\d+\.\d+)', out.stdout, re.M)
    best = min(evaluated, key=lambda e: float(e[1]))
    end = re.search(r'^step (\d+): no better val loss in (\d+) steps: ending here$', out.stdout, re.M)
    assert end and int(end[1]) == int(evaluated[-1][0]) < 150, out.stdout
    # ended at the last evaluation that kept it within 0.2 x 150 = 30 steps past the best
    assert int(end[1]) - int(best[0]) == int(end[2]) and 20 < int(end[2]) <= 30
    assert final_losses(out.stdout)[1] == float(best[1])  # the best model, reported and saved
    assert torch.load(tmp_path / 'm.pt', weights_only=True)['step'] == int(end[1])


def test_the_text_decides_what_was_left_to_it(text_file, tmp_path):
    out = run('gpt.py', f'--input_file={text_file}', f'--checkpoint={tmp_path / "m.pt"}', '--num_chars=0',
              *[a for a in TINY['gpt.py'] if not a.startswith(('--max_iters', '--eval_interval'))],
              '--time_budget=100000.0', '--max_passes=7')
    assert out.returncode == 0, out.stderr
    n_train = int(0.9 * len(text_file.read_text(encoding='utf-8')))
    steps = math.ceil(7 * n_train / (16 * 32))  # the passes decide, not the budget
    plan = re.search(r'^training (\d+) steps: ([\d.]+) passes over ([\d,]+) characters \(max_passes: more would '
                     r'only memorise it\), dropout ([\d.]+), input noise ([\d.]+), weight decay ([\d.]+), '
                     r'evaluating every (\d+) steps$',
                     out.stdout, re.M)
    passes = steps * 16 * 32 / n_train
    assert plan and int(plan[1]) == steps and plan[3] == f'{n_train:,}' and float(plan[2]) == round(passes, 1)
    assert float(plan[4]) == float(plan[5]) == 0.0 and float(plan[6]) == round(0.1 * math.log2(passes), 2)
    assert int(plan[7]) == round(10 * n_train / 9 / (16 * 32))  # after 10 val splits' worth of training
    assert f'max_iters={steps} ' in out.stdout and f'dropout={plan[4]} ' in out.stdout  # passing them back repeats
    assert re.findall(r'^step (\d+)/', out.stdout, re.M)[-1] == str(steps)
    # the values it printed, passed back: the same run, loss for loss, with nothing timed
    again = run('gpt.py', f'--input_file={text_file}', f'--checkpoint={tmp_path / "m.pt"}', '--num_chars=0',
                *[a for a in TINY['gpt.py'] if not a.startswith(('--max_iters', '--eval_interval'))],
                f'--max_iters={plan[1]}', f'--dropout={plan[4]}', f'--input_noise={plan[5]}',
                f'--weight_decay={plan[6]}', f'--eval_interval={plan[7]}')
    assert again.returncode == 0 and 'as given' in again.stdout, again.stderr
    assert step_losses(again.stdout) == step_losses(out.stdout) and final_losses(again.stdout) == final_losses(out.stdout)


# ---------------------------------------------------------------------- bench.py
BENCH_FIGURES = {  # what each part prints: each line's pattern and how many times (the values are not checked)
    'train': {r'^   wall time \d+ s, final: train loss \d+\.\d+, val loss \d+\.\d+$': 1},
    'throughput': {r'^   matmul peak here: \d+ GFLOP/s float32, \d+ GFLOP/s bfloat16$': 1,
                   r'^   lecture-style model \(written in bench.py\): [\d,]+ tokens/s; gpt.py [\d.]+x that$': 1,
                   r'^   the lecture\'s own gpt.py: not run \(no --lecture=PATH given\)$': 1,
                   r'^   gpt.py \((bfloat16|float32)\): [\d,]+ tokens/s, \d+ GFLOP/s of model arithmetic': 1},
    'sampling': {r'^   with the KV cache, float32 weights: [\d.]+ s, [\d,]+ characters/s$': 1,
                 r'^   without the KV cache, bfloat16 weights: [\d.]+ s, [\d,]+ characters/s$': 1,
                 r'^   medians: [\d.]+ s with the cache, [\d.]+ s without: the cache is [\d.]+x faster$': 1},
    'precision': {r'^   gpt.py picks (bfloat16|float32) \(.+\)$': 2,  # this CPU, and capped at AVX2
                  r'^   training step \(\d+ x \d+\), +(float32|bfloat16): +\d+ ms$': 4,
                  r'^   the pick is [\d.]+x the faster of the two$': 2,
                  r'^   sampling, +(float32|float16|bfloat16) weights: +[\d.]+ ms per character': 6},
    'panel': {r'^\| synthetic, 50,000 characters \| 50,000 \| 32 \| \d\.\d{4} \(\d\) \| \d\.\d{4} \| \d+ s \|$': 1},
    'budget': {r'^\| [^|]+ \| \d+ x \d+ \(\d+ heads\) on \d+-character windows, batch \d+: .*; [\d,]+ steps \| \d+ s \| '
               r'final: train loss \d+\.\d+, val loss \d+\.\d+ \|$': 4},
    'step': {r'^   (bfloat16|float32): \d+ ms a step \(median of 1\); its \d+ matmuls alone at their shapes \d+ ms: '
                    r'step / limit [\d.]+$': 2,  # this CPU, and capped at AVX2
             r'^     where a step goes \(profiled\): the model\'s matmuls \(attention\'s included\) \d+%, fused '
             r'attention \d+%, optimizers \(Muon, AdamW\) \d+%, the rest \d+%$': 2},
    'markov': {r'^\| [^|]+ \| \d\.\d{4} \| \d\.\d{4} \(\d\) \| \d\.\d{4} \(\d\.\d{4}\) \| \d+ s \|$': 3},
    'gpu': {r'^10\. the GPU check on .*, torch .*, \d+ device\(s\)$': 1,
            r'^   (python gpt.py \(defaults\)|torchrun, 2 processes|resumed in float16): \d+ s, final: train loss': 3,
            r'^   planned .* ms a step, ran a median [\d,]+ ms/step, [\d,]+ tokens/s; refitted: ': 1,
            r'^   float32, stopped halfway: \d+ s, stopped at step 4 of 8': 1,
            r'^   --sample_only=True: \d+ s, exit status 0, \d+ characters': 1,
            r'^   profile of 10 training steps: kernels [\d,.]+ ms of [\d,.]+ ms wall': 1,
            r'^   (forward and backward|clipping and the optimizers|Muon\'s step \(4 matrices\)|the average): '
            r'[1-9][\d,]* operators, [\d.]+ ms of them, [\d.]+ ms on the host, in a step of [\d.]+ ms$': 4},
    'large': {r'^   reading and encoding in gpt.py: [\d.]+ s, \d+ million characters a second; vocabulary \d+': 1,
              r'^   python gpt.py --input_file=large.txt: \d+ s, peak memory [\d,]+ MB; final: train loss': 1,
              r'^   the same model on its first [\d,]+ characters: peak [\d,]+ MB; the large text adds': 1},
}


@pytest.mark.parametrize('parts', [('train', 'throughput', 'sampling', 'panel'), ('precision', 'step'), ('budget',),
                                   ('large', 'markov'), ('gpu',)], ids='+'.join)  # (a few parts a process)
def test_bench_runs_every_part_tiny(parts):
    # --smoke: toy sizes, a few seconds a part, so that a change to gpt.py cannot break the benchmark unseen
    out = subprocess.run([sys.executable, str(ROOT / 'bench.py'), *parts, '--smoke'], capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0 and 'Traceback' not in out.stderr, out.stdout + out.stderr
    for part in parts:
        for pattern, times in BENCH_FIGURES[part].items():
            assert len(re.findall(pattern, out.stdout, re.M)) == times, (pattern, out.stdout)


def test_bench_groups_every_part():
    grouped = [p for parts in test_bench_runs_every_part_tiny.pytestmark[0].args[1] for p in parts]
    assert sorted(grouped) == sorted(BENCH_FIGURES)


# ---------------------------------------------------------------------- what a person sees
@pytest.mark.parametrize('script', SCRIPTS)
def test_each_line_reaches_a_pipe_when_printed(script, text_file, tmp_path):
    # `python gpt.py | tee run.log`: without PYTHONUNBUFFERED (which this machine sets, a user's does not),
    # Python holds a pipe's output in a block buffer; each line must arrive while the run goes on
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONUNBUFFERED'}
    # a long run that prints its start lines and then nothing for a long while (no progress lines, no
    # evaluations): a block buffer holds them until it fills or the process ends
    proc = subprocess.Popen([sys.executable, str(ROOT / script), '--device=cpu', f'--input_file={text_file}',
                             f'--checkpoint={tmp_path / "m.pt"}', *TINY[script], '--max_iters=1000000',
                             *['--log_interval=1000000'] * (script == 'gpt.py'), '--eval_interval=1000000'],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        for _ in range(600):  # up to 60 s for the settings line
            if any(line.startswith('settings: ') for line in lines):
                break
            reader.join(0.1)
        assert proc.poll() is None, 'the run ended'  # still training: the lines came as they were printed
        assert lines and lines[0].startswith('device cpu' if script == 'gpt.py' else 'settings: '), lines
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize('script', SCRIPTS)
def test_a_reader_that_goes_away_ends_the_run_quietly(script, text_file, tmp_path):
    # python gpt.py | head -1: the pipe closes, and the next line out must end the run without a traceback
    proc = subprocess.Popen([sys.executable, str(ROOT / script), f'--input_file={text_file}',
                             f'--checkpoint={tmp_path / "m.pt"}', '--device=cpu', *TINY[script],
                             '--max_iters=100000', '--log_interval=1' if script == 'gpt.py' else '--eval_interval=1'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment())
    proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1 and stderr == '', stderr


@pytest.mark.parametrize('script', SCRIPTS)
def test_a_sample_in_any_alphabet_prints_on_a_console_that_cannot_show_it(script, tmp_path, monkeypatch):
    # a Windows console redirected (cp1252) cannot encode Cyrillic: the sample is printed with those
    # characters escaped, no traceback, and gpt.py's sample_file holds it exactly, in UTF-8
    path, sample = tmp_path / 'russian.txt', tmp_path / 'sample.txt'
    path.write_text('Мой дядя самых честных правил, когда не в шутку занемог.\n' * 40, encoding='utf-8')
    monkeypatch.setenv('PYTHONIOENCODING', 'cp1252')
    to_file = [f'--sample_file={sample}'] if script == 'gpt.py' else []  # (bigram.py prints it only)
    out = run(script, f'--input_file={path}', f'--checkpoint={tmp_path / "m.pt"}', *TINY[script],
              '--max_iters=5', '--num_chars=40', *to_file, '--prompt=Мой')
    assert out.returncode == 0 and 'Traceback' not in out.stderr, out.stderr
    printed = out.stdout.split(f'saved {tmp_path / "m.pt"}\n')[-1]  # the sample, escaped
    assert printed.isascii() and printed.endswith('\n')
    generated = printed[:-1].encode().decode('unicode_escape')  # (the text has no backslashes)
    assert generated.startswith('Мой') and len(generated) == 43
    assert not to_file or sample.read_text(encoding='utf-8') == generated  # in UTF-8, exactly


LOG = 'step,seconds,characters,lr,train_loss,val_loss,best_val_loss\n10,1.0,100,0.01,3.0,,\n10,1.2,100,0.01,,2.9,2.9\n' \
      '20,2.0,200,0.005,2.5,,\n20,2.2,200,0.005,,2.7,2.7\n30,3.0,300,0.001,2.2,,\n30,3.2,300,0.001,,2.8,2.7\n'


def test_bench_draws_a_log(tmp_path):
    pytest.importorskip('matplotlib')  # (a test-only help for bench.py's drawing; the scripts never need it)
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread
    def draw(folder, log, *args):  # the PNG's pixels (H, W, 3), and its bytes
        (tmp_path / folder).mkdir()
        (tmp_path / folder / 'run.csv').write_text(log)  # (the title is the log's name: the same in each)
        out = subprocess.run([sys.executable, str(ROOT / 'bench.py'), 'plot', str(tmp_path / folder / 'run.csv'),
                              *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return imread(tmp_path / folder / 'run.png')[..., :3], (tmp_path / folder / 'run.png').read_bytes()
    def pixels(image, color):  # how many are this color
        return int((abs(image - to_rgb(color)).max(-1) < 0.05).sum())
    header, *rows = LOG.splitlines(True)
    no_val = header + ''.join(row for row in rows if not row.split(',')[5])  # the progress rows only
    whole, whole_png = draw('run', LOG, '--reference=1.7008:n-gram')
    plain, plain_png = draw('plain', LOG)
    train_only, _ = draw('train', no_val, '--reference=1.7008:n-gram')
    assert whole_png.startswith(b'\x89PNG') and whole_png != plain_png  # the reference drawn
    for color in ('tab:blue', 'tab:orange', 'tab:red'):  # train, val, the best val's star
        assert pixels(whole, color) > 20 and pixels(plain, color) > 20, color
    assert pixels(train_only, 'tab:blue') > 20  # and no val curve, no star
    assert pixels(train_only, 'tab:orange') == pixels(train_only, 'tab:red') == 0


@pytest.mark.parametrize('args', [['plot', 'run.csv', '--reference=abc:x'], ['plot', 'run.csv', '--reference=1.2.3'],
                                  ['plot'], ['plotx']])
def test_bench_says_bad_input_in_one_line(args, tmp_path):
    (tmp_path / 'run.csv').write_text(LOG)
    out = subprocess.run([sys.executable, str(ROOT / 'bench.py'), *args], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith('error: ') and not (tmp_path / 'run.png').exists()


def test_bench_without_matplotlib_says_how_to_get_it(tmp_path):
    (tmp_path / 'run.csv').write_text(LOG)
    hidden = ('import runpy, sys; sys.modules["matplotlib"] = None; sys.argv = sys.argv[1:]; '
              'runpy.run_path(sys.argv[0], run_name="__main__")')  # (as if it were not installed)
    out = subprocess.run([sys.executable, '-c', hidden, str(ROOT / 'bench.py'), 'plot', str(tmp_path / 'run.csv')],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == \
        'error: drawing a log needs matplotlib, which gpt.py does not: pip install matplotlib'
    assert not (tmp_path / 'run.png').exists()
