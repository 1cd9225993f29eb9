"""The bigram baseline: the next character's logits, read off a table row chosen by the current one.

    python bigram.py                                      train on input.txt, save bigram.pt, sample
    python bigram.py --input_file=my_text.txt             train on your own text (any UTF-8 text)
    python bigram.py --sample_only=True --prompt="ROMEO:" sample from bigram.pt without training
In a notebook: paste this file into a cell and run it, or: import bigram; bigram.main(['--seed=1'])
Every setting below can be given as --name=value. The ideas come first (settings, model, data,
training, sampling, main()); below the banner is only plumbing (command line, files, checkpoints).
"""
import ast, contextlib, csv, dataclasses, hashlib, io, math, os, pathlib, signal, sys, threading
import time, warnings
import urllib.request
warnings.filterwarnings('ignore', message='Failed to initialize NumPy')  # torch works without numpy
import torch
import torch.nn as nn
import torch.nn.functional as F

# files go beside this script, or into the current folder where there is none (a notebook cell)
HERE = os.path.dirname(os.path.abspath(globals().get('__file__', 'bigram.py')))
# ---------------------------------------------------------------------------------- settings
input_file = os.path.join(HERE, 'input.txt')  # the text to train on (UTF-8); fetched if missing
input_url = ('https://raw.githubusercontent.com/karpathy/char-rnn/master/data/'  # where from
             'tinyshakespeare/input.txt')
checkpoint = os.path.join(HERE, 'bigram.pt')  # written at the end of training
log_file = 'auto'     # the run's losses, as CSV (auto: bigram.csv beside the checkpoint; '': none)
resume = False        # continue training from `checkpoint` instead of starting afresh
sample_only = False   # only load `checkpoint` and generate
block_size = 256      # characters per window (a bigram looks one back: long windows batch more)
batch_size = 64       # windows per step (large: a smooth estimate of the whole table's loss)
max_iters = 150       # optimizer steps; the learning rate decays linearly to zero at the last
stop_after = 0        # end this run after this many steps, and save? (0: never; resume goes on)
lr = 0.3              # AdamW's learning rate: a lookup table tolerates a large one
weight_decay = 0.01   # pulls unseen pairs' logits towards uniform, a little smoothing
eval_interval = 50    # steps between evaluations on the whole validation split
log_interval = 25     # steps between progress lines
seed = 1337           # seeds the initial table, the batches and the sample
device = ('cuda' if torch.cuda.is_available() else  # where to train? (--device=cpu: on the CPU)
          'mps' if torch.backends.mps.is_available() else 'cpu')
prompt = ''           # the sample continues this text ('': from the vocabulary's first character)
num_chars = 500       # characters to generate
temperature = 1.0     # <1 is more conservative, >1 more adventurous, 0 always takes the likeliest
top_k = 0             # sample among the k likeliest characters only (0: all)
sample_file = ''      # also write the sample to this file

# ---------------------------------------------------------------------------------- the model
class Bigram(nn.Module):
    """A table whose row for the current character holds the next character's logits."""
    def __init__(self, vocab_size):
        super().__init__()
        self.table = nn.Embedding(vocab_size, vocab_size)  # row c: the logits of whatever follows c
        nn.init.zeros_(self.table.weight)  # start from the uniform guess, not random preferences

    def forward(self, idx, targets=None):  # idx (B, T) -> logits (B, T, vocab) or the mean loss
        logits = self.table(idx)
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    @torch.no_grad()
    def generate(self, idx, n, temperature=1.0, top_k=0):  # (1, T) -> (1, T + n); the last counts
        for _ in range(n):
            nxt = pick_next(self(idx[:, -1:])[:, -1], temperature, top_k)
            idx = torch.cat((idx, nxt), dim=1)
        return idx

def pick_next(logits, temperature, top_k):  # logits (B, vocab) -> (B, 1): a character drawn
    if temperature < torch.finfo(logits.dtype).tiny:  # 0, or as good as 0 in this precision
        return logits.argmax(-1, keepdim=True)
    logits = (logits - logits.max(-1, keepdim=True).values) / temperature  # (largest 0: no inf/inf)
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    return torch.multinomial(F.softmax(logits, dim=-1), 1)

# ---------------------------------------------------------------------------------- the data
def split_data(text, chars):  # the characters as integers: the first 90% to train on, the rest val
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], device=device)
    n_train = int(0.9 * len(data))
    return data[:n_train], data[n_train:]

def get_batch(data, gen):  # batch_size random windows and, one character on, what follows each
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=gen)
    xy = data[(ix[:, None] + torch.arange(block_size + 1)).to(device)]  # (B, T + 1)
    return xy[:, :-1], xy[:, 1:]

@torch.no_grad()
def split_loss(model, data):  # mean cross-entropy over the whole split, in windows end to end
    n = (len(data) - 1) // block_size
    x = data[:n * block_size].view(n, block_size)  # (n, T)
    y = data[1:n * block_size + 1].view(n, block_size)  # (n, T): each character's next
    rows = max(1, 2 ** 24 // (block_size * model.table.num_embeddings))  # logits of 64 MB at a time
    return sum(model(x[i:i + rows], y[i:i + rows]).item() * len(x[i:i + rows])
               for i in range(0, n, rows)) / n

# ---------------------------------------------------------------------------------- training
@dataclasses.dataclass
class Run:
    """A run besides the weights: what a checkpoint keeps, so that a resumed run goes on exactly."""
    vocab: str
    optimizer: torch.optim.Optimizer
    gen: torch.Generator  # draws the batches
    step: int = 0
    clock: float = 0.0  # when the log's seconds began
    log_rows: list = None  # the log's rows to write before the next (a resumed run's)

def train(model, run, train_data, val_data):
    last = min(max_iters, run.step + stop_after) if stop_after else max_iters
    clock = (time.time(), run.step)  # for the progress lines: since when, and since which step
    with stop_signals() as stop:  # Ctrl-C (or SIGTERM) ends the run cleanly after a step
        while run.step < last:
            for group in run.optimizer.param_groups:
                group['lr'] = lr * (max_iters - run.step) / max_iters  # down to zero at max_iters
            x, y = get_batch(train_data, run.gen)
            loss = model(x, y)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            run.step += 1
            loss = loss.item()
            if not math.isfinite(loss):
                fail(f'the loss became {loss} at step {run.step}; the last checkpoint is untouched')
            if run.step % log_interval == 0 or run.step == last:
                clock = log_progress(run.step, last, loss, clock)
                log_row(run, train_loss=loss)
            if stop.is_set():
                save_checkpoint(model, run)
                print(f'interrupted at step {run.step}: checkpoint saved to {checkpoint}')
                sys.exit(130)
            if run.step % eval_interval == 0 and run.step < last:
                val_loss = split_loss(model, val_data)
                print(f'step {run.step}: val loss {val_loss:.4f}')
                log_row(run, val_loss=val_loss)
    if run.step < max_iters:  # --stop_after: the run as it stands, to go on from
        save_checkpoint(model, run)
        print(f'stopped at step {run.step} of {max_iters}: saved {checkpoint}; resume goes on')

def finish(model, run, train_data, val_data):  # the final line, and the checkpoint
    train_loss, val_loss = split_loss(model, train_data), split_loss(model, val_data)
    print(f'final: train loss {train_loss:.4f}, val loss {val_loss:.4f}')
    log_row(run, train_loss=train_loss, val_loss=val_loss)
    save_checkpoint(model, run)
    print(f'saved {checkpoint}')

# ---------------------------------------------------------------------------------- sampling
def sample(model, chars, prompt='', n=500, temperature=1.0, top_k=0):  # the prompt and n more
    stoi = {c: i for i, c in enumerate(chars)}
    where = model.table.weight.device
    context = torch.tensor([[stoi[c] for c in prompt or chars[0]]], device=where)  # (1, T)
    return ''.join(chars[i] for i in model.generate(context, n, temperature, top_k)[0].tolist())

def main(args=None):  # args as on the command line (['--name=value', ...]); None: the command line
    before = {k: globals()[k] for k in SETTINGS}  # put back at the end: a notebook may call again
    try:
        train_and_sample(args)
    finally:
        globals().update(before)

def train_and_sample(args):
    start(args)  # the settings given, and the output
    ckpt = load_checkpoint(checkpoint) if resume or sample_only else None
    text = None if sample_only else read_text(input_file, ckpt)
    chars = ckpt['vocab'] if ckpt else ''.join(sorted(set(text)))  # every distinct character
    check_prompt(chars)
    torch.manual_seed(seed)
    model = Bigram(len(chars)).to(device)
    if ckpt:
        load_weights(model, ckpt)
    announce(model, chars)
    if text:
        train_data, val_data = split_data(text, chars)
        run = start_run(model, chars, ckpt)
        train(model, run, train_data, val_data)
        if run.step == max_iters:  # only a run that has ended reports its final losses
            finish(model, run, train_data, val_data)
    show(sample(model, chars, prompt, num_chars, temperature, top_k))  # (and to sample_file)

# ==================================================================================================
# Here ends what there is to learn about a bigram model. Below is plumbing: settings from the
# command line, the text and its download, checkpoints. A reader may stop here.
# ==================================================================================================
SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'  # of Tiny Shakespeare
# the settings: every name from input_file to sample_file, as written at the top
NAMES = list(globals())
SETTINGS = {k: globals()[k]
            for k in NAMES[NAMES.index('input_file'):NAMES.index('sample_file') + 1]}

def start(args):
    # the settings given (the command line only where this file is the program run: not in a
    # notebook's kernel, whose own arguments are not settings, nor when imported), and the output
    program = os.path.abspath(sys.argv[0]) == os.path.abspath(globals().get('__file__', '<cell>'))
    apply_overrides(sys.argv[1:] if args is None and program else list(args or []))
    if log_file == 'auto':  # (the run's log beside its checkpoint)
        globals()['log_file'] = os.path.splitext(checkpoint)[0] + '.csv'
    # each line out when printed, also into a pipe or a file;
    # characters a console cannot show, escaped (\u0436)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, 'reconfigure'):
            stream.reconfigure(line_buffering=True, errors='backslashreplace')

def show(text):  # the sample, on the console and in sample_file (exact UTF-8, whatever the console)
    print(text)
    if sample_file:
        write_atomically(sample_file, lambda f: f.write(text.encode('utf-8')))

def first_line(e):  # of an exception's message, or its name where it has none (an EOFError)
    return (str(e).strip().splitlines() or [type(e).__name__])[0]

def fail(message):  # bad input of any kind ends here: one line, exit status 2, no traceback
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)

def apply_overrides(args):  # --name=value, value a Python literal (taken as is for text settings)
    valid = 'valid settings: ' + ', '.join(SETTINGS)
    for arg in args:
        name, eq, text = arg.removeprefix('--').partition('=')
        if not arg.startswith('--') or not eq or name not in SETTINGS:
            fail(f'unknown setting {arg!r}; {valid}')
        default = SETTINGS[name]
        try:
            value = text if isinstance(default, str) else ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        value = float(value) if type(default) is float and type(value) is int else value
        if type(value) is not type(default):
            fail(f'--{name} must be of type {type(default).__name__}, not {text!r}; {valid}')
        if type(value) is float and not math.isfinite(value):  # (1e400 reads as inf)
            fail(f'--{name} must be a finite number, not {text!r}')
        globals()[name] = value
    problems = [f'{k} must be positive'
                for k in ('block_size', 'batch_size', 'max_iters', 'eval_interval', 'log_interval')
                if globals()[k] <= 0]
    problems += [f'{k} must be between 0 and 1e30'
                 for k in ('stop_after', 'num_chars', 'top_k', 'temperature', 'lr', 'weight_decay')
                 if not 0 <= globals()[k] < 1e30]
    if not 0 <= seed < 2 ** 63:
        problems.append('seed must be between 0 and 2**63 - 1')
    paths = map(path_problem, ('checkpoint', 'log_file', 'sample_file'))  # (before training)
    problems += [problem for problem in paths if problem]
    if problems:
        fail('; '.join(problems))
    try:
        torch.empty(1, device=device)
    except Exception as e:
        fail(f'device {device!r} cannot be used here ({first_line(e)})')
    if torch.device(device).type not in ('cpu', 'cuda', 'mps'):
        fail(f'device {device!r} is not one that bigram.py trains on: cpu, cuda or mps')

def path_problem(name):  # what is wrong with where this setting's file would be written, if any
    path = globals()[name]
    if path in ('', 'auto') and name != 'checkpoint':  # (no file, or one beside the checkpoint)
        return ''
    if not path:
        return f'{name} is empty: it needs a file\'s path'
    if os.path.isdir(path):
        return f'{name} {path} is a folder, not a file'
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f'{name} {path} is in a folder that does not exist'
    if not os.access(folder, os.W_OK):  # (a read-only disk, or another user's folder)
        return f'{name} {path} is in a folder that cannot be written to'
    same = [k for k in ('input_file', 'checkpoint') if k != name and
            os.path.abspath(globals()[k]) == os.path.abspath(path)]
    return f'{name} {path} is also the {same[0]}, which writing it would lose' if same else ''

def announce(model, chars):  # the start lines: what runs where, and every setting as it stands
    print(f'device {device}, {sum(p.numel() for p in model.parameters()):,} parameters, '
          f'vocabulary {len(chars)}')
    print('settings: ' + ' '.join(f'{k}={globals()[k]!r}' for k in SETTINGS))

def log_progress(step, last, loss, clock):  # one progress line; returns the clock for the next one
    dt = (time.time() - clock[0]) / (step - clock[1])
    print(f'step {step}/{max_iters} | loss {loss:.4f} | {dt * 1000:.1f} ms/step | '
          f'{batch_size * block_size / dt:,.0f} tokens/s | {(last - step) * dt:.1f} s left')
    return time.time(), step

# ---------------------------------------------------------------------------------- files
@contextlib.contextmanager
def stop_signals():
    # an Event set by Ctrl-C or SIGTERM while training; the handlers before, put back after
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)

def write_atomically(path, write):  # a crash while writing leaves the old file as it was
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # (torch.save says a full disk with a RuntimeError)
        with contextlib.suppress(OSError):  # (a read-only folder: no tmp was made)
            pathlib.Path(tmp).unlink(missing_ok=True)
        fail(f'cannot write {path}: {getattr(e, "strerror", None) or first_line(e)}')

def download_tiny_shakespeare(path):
    try:
        data = urllib.request.urlopen(input_url, timeout=60).read()
        problem = ('' if hashlib.sha256(data).hexdigest() == SHA256
                   else 'it sent something else (wrong sha256)')
    except (OSError, ValueError) as e:
        problem = f'failed ({e})'
    if problem:
        fail(f'{path} is missing and downloading {input_url} {problem}; '
             'put a text file there or pass --input_file=PATH')
    write_atomically(path, lambda f: f.write(data))
    print(f'downloaded Tiny Shakespeare ({len(data):,} bytes, sha256 checked) to {path}')

def read_text(path, ckpt):  # the training text, checked against what training needs
    if path == SETTINGS['input_file'] and not os.path.exists(path):
        download_tiny_shakespeare(path)
    try:
        text = pathlib.Path(path).read_bytes().decode('utf-8')
    except OSError as e:  # missing, a directory, no permission...
        fail(f'cannot read input file {path}: {e.strerror}; '
             'put a text file there or pass --input_file=PATH')
    except UnicodeDecodeError as e:
        fail(f'input file {path} is not valid UTF-8 (bad byte at offset {e.start})')
    unknown = ''.join(sorted(set(text) - set(ckpt['vocab']))) if ckpt else ''
    if unknown:
        fail(f'{path} has characters that {checkpoint} has never seen: {unknown!r}')
    # both splits need at least one window and its next character
    if len(text) < 10 * (block_size + 1):
        fail(f'{path} has {len(text)} characters, fewer than the {10 * (block_size + 1)} needed')
    return text

def check_prompt(chars):
    unknown = ''.join(sorted(set(prompt) - set(chars)))
    if unknown:
        fail(f'the prompt has characters that are not in the vocabulary: {unknown!r}')

# ---------------------------------------------------------------------------------- checkpoints
def load_checkpoint(path):
    if not os.path.isfile(path):
        fail(f'checkpoint {path} does not exist; train first, or pass --checkpoint=PATH')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)  # weights_only: runs no code
    except Exception as e:
        fail(f'checkpoint {path} cannot be loaded, truncated or not a checkpoint '
             f'({first_line(e)[:100]})')
    origin = ckpt.get('script') if isinstance(ckpt, dict) else None
    if origin != 'bigram.py':
        fail(f'{path} is not a bigram.py checkpoint (it comes from {origin or "something else"})')
    return ckpt

def load_weights(model, ckpt):
    try:
        model.load_state_dict(ckpt['model'])
    except RuntimeError:  # other weights' names or shapes: from another version of this script
        fail(f'{checkpoint} holds weights that do not fit this model '
             '(from another version of bigram.py?)')

def start_run(model, chars, ckpt):
    # a new run, or the one in the checkpoint: optimizer, step and random numbers
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    run = Run(chars, optimizer, torch.Generator().manual_seed(seed))
    if ckpt:
        for saved, now in zip(ckpt['optimizer']['param_groups'], run.optimizer.param_groups):
            # the settings given now (weight_decay...)
            saved.update({k: v for k, v in now.items() if k != 'params'})
        run.optimizer.load_state_dict(ckpt['optimizer'])
        run.gen.set_state(ckpt['rng'])
        torch.set_rng_state(ckpt['torch_rng'])
        run.step = ckpt['step']
        if run.step > max_iters:
            fail(f'{checkpoint} has trained {run.step} steps already, more than '
                 f'--max_iters={max_iters}')
    start_log(run, resumed=ckpt is not None)
    return run

LOG_COLUMNS = ('step', 'seconds', 'characters', 'lr', 'train_loss', 'val_loss')

def start_log(run, resumed):
    # a new run starts log_file afresh; a resumed one keeps its rows up to its step
    run.clock = time.time()
    if not log_file:
        return
    rows = []
    if resumed and os.path.isfile(log_file):
        try:
            with open(log_file, newline='', encoding='utf-8') as f:
                rows = [row for row in csv.DictReader(f) if int(row['step']) <= run.step]
        except (OSError, ValueError, KeyError, TypeError):  # not this script's log: started afresh
            rows = []
    # its seconds go on from where they were
    run.clock -= float(rows[-1]['seconds']) if rows else 0.0
    # written with the first new row: a run that fails before it leaves the old log
    run.log_rows = rows

def log_row(run, **losses):  # one row of log_file, written as it comes: a crash keeps rows so far
    if not log_file:
        return
    rate = lr * (max_iters - run.step + 1) / max_iters  # (the rate of the step just taken)
    row = dict(step=run.step, seconds=f'{time.time() - run.clock:.1f}', lr=f'{rate:.6g}',
               characters=run.step * batch_size * block_size,
               **{k: f'{v:.4f}' for k, v in losses.items()})
    if run.log_rows is not None:  # the header, and the rows a resumed run keeps
        text = io.StringIO()
        csv.DictWriter(text, LOG_COLUMNS).writeheader()
        csv.DictWriter(text, LOG_COLUMNS).writerows(run.log_rows)
        write_atomically(log_file, lambda f: f.write(text.getvalue().encode('utf-8')))
        run.log_rows = None
    try:
        with open(log_file, 'a', newline='', encoding='utf-8') as f:
            csv.DictWriter(f, LOG_COLUMNS).writerow(row)
    except OSError as e:
        fail(f'cannot write {log_file}: {e.strerror}')

def load(path='bigram.pt', device=None):
    # for one's own code: (model, vocabulary), for sample(model, ...)
    """The table a checkpoint holds, on device (None: a GPU, else a Mac's, else the CPU). Raises
    FileNotFoundError or ValueError: never exits."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise ValueError(f'{path} cannot be loaded: truncated, or not a checkpoint') from e
    if not isinstance(ckpt, dict) or ckpt.get('script') != 'bigram.py':
        raise ValueError(f'{path} is not a bigram.py checkpoint')
    model = Bigram(len(ckpt['vocab']))
    model.load_state_dict(ckpt['model'])
    if device is None:
        # where to train? (--device=cpu: on the CPU)
        device = ('cuda' if torch.cuda.is_available() else
          'mps' if torch.backends.mps.is_available() else 'cpu')
    return model.to(device).eval(), ckpt['vocab']

def save_checkpoint(model, run):  # never over a good checkpoint with a broken model
    if not model.table.weight.isfinite().all():
        fail(f'the weights became non-finite by step {run.step}; '
             f'stopped, {checkpoint} is untouched')
    state = {'script': 'bigram.py', 'model': model.state_dict(), 'vocab': run.vocab,
             'step': run.step, 'settings': {k: globals()[k] for k in SETTINGS},
             'optimizer': run.optimizer.state_dict(),
             'rng': run.gen.get_state(), 'torch_rng': torch.get_rng_state()}
    write_atomically(checkpoint, lambda f: torch.save(state, f))

if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:  # outside the training loop there is nothing to save
        sys.exit(130)
    except BrokenPipeError:  # the output's reader has gone (python bigram.py | head): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except RuntimeError as e:  # a CPU's allocator says it is out of memory with a RuntimeError
        if "can't allocate memory" not in str(e):
            raise
        fail(f'out of memory on {device}: try a smaller --batch_size=')
