"""The bigram baseline: a table whose row for the current character holds the next one's logits.

    python bigram.py                     train on input.txt, save bigram.pt and sample
    python bigram.py --input_file=a.txt  train on your own text (any setting: --name=value)
    python bigram.py --sample_only=True --prompt=ROMEO:
In Python: model, chars = bigram.load('bigram.pt'); bigram.sample(model, chars, 'A', 99)
In a notebook: paste this file into a cell and run it, or call bigram.main(['--seed=1']).
"""
import os, sys, time, warnings
warnings.filterwarnings('ignore', message='Failed to initialize NumPy')  # (none needed)
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(globals().get('__file__', 'x')))  # (a notebook: its folder)
# ---------------------------------------------------------------- settings
input_file = os.path.join(HERE, 'input.txt')  # the text to train on (Tiny Shakespeare: fetched)
checkpoint = os.path.join(HERE, 'bigram.pt')  # the table, saved at the end
sample_only = False  # only load the checkpoint and sample
block_size = 256     # characters per window (a bigram looks one back: windows batch its pairs)
batch_size = 64      # windows per step
max_iters = 150      # steps; the learning rate falls linearly towards 0
lr = 0.3             # AdamW's learning rate: a table takes a large one
weight_decay = 0.01  # AdamW's default, as the lecture's (it barely matters here)
eval_interval = 50   # steps between progress lines, each with the validation loss
seed = 1337          # seeds the batches and the sample
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # or mps
prompt = ''          # the sample goes on from here ('': the vocabulary's first)
num_chars = 500      # characters to generate
SETTINGS = ('input_file checkpoint sample_only block_size batch_size max_iters lr weight_decay '
            'eval_interval seed device prompt num_chars').split()  # (a notebook has others)

# ---------------------------------------------------------------- the model
class Bigram(nn.Embedding):  # row c holds the logits of what follows c
    def __init__(self, vocab_size):
        super().__init__(vocab_size, vocab_size)
        nn.init.zeros_(self.weight)  # start from the uniform guess
    def forward(self, xy):  # windows (B, T + 1): x = xy[:, :-1], y = xy[:, 1:]; the mean loss
        logits = super().forward(xy[:, :-1])  # (B, T, vocab)
        return nn.functional.cross_entropy(logits.flatten(0, 1), xy[:, 1:].flatten())  # (B*T)

@torch.no_grad()
def split_loss(model, data):  # the mean loss over all of a split
    windows = data.unfold(0, block_size + 1, block_size)  # (N, T + 1): each pair once
    rows = max(1, 2 ** 24 // (block_size * model.num_embeddings))  # (logits: 64 MB at most)
    return sum(model(w).item() * len(w) for w in windows.split(rows)) / len(windows)

# ---------------------------------------------------------------- training
def train():  # on input_file; the table is saved to checkpoint
    text = read_text(input_file)
    chars = ''.join(sorted(set(text)))  # the vocabulary
    data = torch.tensor([chars.index(c) for c in text], device=device)
    n = int(0.9 * len(data))  # the first 90% to train on, the rest: val
    model = Bigram(len(chars)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    torch.manual_seed(seed)  # the batches
    windows = data[:n].unfold(0, block_size + 1, 1)  # (n - T, T + 1): one at every start
    sample(model, chars, prompt, 0)  # (a prompt it cannot go on from: said before training)
    start = time.time()
    for step in range(1, max_iters + 1):
        optimizer.param_groups[0]['lr'] = lr * (max_iters - step + 1) / max_iters
        loss = model(windows[torch.randint(len(windows), (batch_size,))])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % eval_interval == 0 and step < max_iters:
            dt = (time.time() - start) / step
            print(f'step {step}/{max_iters} | loss {loss.item():.4f} | val loss '
                  f'{split_loss(model, data[n:]):.4f} | {dt * 1000:.1f} ms/step | '
                  f'{batch_size * block_size / dt:,.0f} tokens/s')
    print(f'final: train loss {split_loss(model, data[:n]):.4f}, '
          f'val loss {split_loss(model, data[n:]):.4f}')
    state = {'script': 'bigram.py', 'model': model.state_dict(), 'vocab': chars}
    write_atomically(checkpoint, lambda f: torch.save(state, f))
    print(f'saved {checkpoint}')

# ---------------------------------------------------------------- sampling
@torch.no_grad()
def sample(model, chars, prompt, n):
    unknown = set(prompt) - set(chars)
    if unknown:
        raise ValueError('the prompt has characters that are not in the '
                         f'vocabulary: {"".join(sorted(unknown))!r}')
    idx = [chars.index(c) for c in prompt or chars[0]]
    for _ in range(n):
        probs = model.weight[idx[-1]].softmax(-1)  # the last character's row
        idx.append(int(torch.multinomial(probs, 1)))
    return ''.join(chars[i] for i in idx)  # the prompt and n more

def main(args=()):  # args as on the command line: ['--lr=0.1', ...]
    saved = dict(globals())  # put back at the end: a notebook goes on
    try:
        apply_overrides(args)
        print('settings:', *(f'{k}={globals()[k]!r}' for k in SETTINGS))
        if not sample_only:
            train()
        torch.manual_seed(seed)
        model, chars = load(checkpoint, device)
        print(sample(model, chars, prompt, num_chars))
    finally:
        globals().update(saved)

# ------------------- plumbing: a problem raises ValueError (or FileNotFoundError)
def apply_overrides(args):  # --name=value: True, False, a number, text
    valid = 'valid settings: ' + ', '.join(SETTINGS)
    for arg in args:
        name, eq, text = arg.removeprefix('--').partition('=')
        if not eq or name not in SETTINGS:
            raise ValueError(f'{arg!r} is not --name=value for a known name; {valid}')
        kind = type(globals()[name])
        try:
            globals()[name] = ('False', 'True').index(text) == 1 if kind is bool else kind(text)
        except ValueError:
            raise ValueError(f'--{name} must be of type {kind.__name__}, not {text!r}; {valid}')
    sizes = 'block_size batch_size max_iters eval_interval'.split()
    for k in sizes + 'lr weight_decay num_chars seed'.split():
        low = k in sizes  # (True: 1)
        if not low <= globals()[k] < 2 ** 63:  # (nan and inf fail too)
            raise ValueError(f'{k} must be in [{low:d}, {2 ** 63})')
    try:
        torch.zeros(1, device=device).item()
    except Exception as e:  # (not here, unknown to torch, or 'meta')
        raise ValueError(f'device {device!r} is not one that works here ({str(e)[:200]})')
    if os.path.abspath(checkpoint) == os.path.abspath(input_file):
        raise ValueError(f'checkpoint {checkpoint} is also the input_file, '
                         'which writing it would lose')

URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'
HINT = 'put a text file there or pass --input_file=PATH'
def read_text(path):  # the text to train on, checked
    if path == os.path.join(HERE, 'input.txt') and not os.path.exists(path):
        try:  # Tiny Shakespeare: to a temporary file, checked, renamed
            torch.hub.download_url_to_file(URL, path, SHA256)
        except (OSError, RuntimeError) as e:  # (no network, a wrong file)
            raise ValueError(f'{path} is missing, downloading {URL} failed ({e}); {HINT}')
        print(f'downloaded Tiny Shakespeare, sha256 checked, to {path}')
    try:
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8-sig')  # (without Notepad's mark)
    except OSError as e:  # missing, a folder, no permission...
        raise ValueError(f'cannot read {path}: {e.strerror}; {HINT}')
    except UnicodeDecodeError as e:
        raise ValueError(f'{path} is not valid UTF-8 (bad byte at offset {e.start})')
    if len(text) < 10 * (block_size + 1):  # a window in each split
        raise ValueError(f'{path} has {len(text)} characters, fewer than the '
                         f'{10 * (block_size + 1)} needed (ten windows of --block_size + 1)')
    return text

def write_atomically(path, write):  # a crash leaves the old file whole
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            write(f)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # (torch.save: a full disk)
        raise ValueError(f'cannot write {path}: {e}')
    finally:  # (Ctrl-C too)
        if os.path.exists(tmp):
            os.remove(tmp)

def load(path, device=None):
    """(model, chars): a checkpoint's table, on device (None: the device setting),
    and its vocabulary. A file it cannot load raises FileNotFoundError or ValueError, never an
    exit."""
    try:
        ckpt = dict(torch.load(path, 'cpu', weights_only=True))  # runs no code; no dict: fails
        origin = ckpt['script']
    except FileNotFoundError:  # (as it is: "No such file or directory")
        raise
    except Exception as e:
        raise ValueError(f'cannot load {path}: truncated or not a checkpoint ({type(e).__name__})')
    if origin != 'bigram.py':
        raise ValueError(f'{path} is not a bigram.py checkpoint (it comes from {origin})')
    model = Bigram(len(ckpt['vocab']))
    try:
        model.load_state_dict(ckpt['model'])
    except RuntimeError:  # (other names: an earlier version's)
        raise ValueError(f'{path} comes from another version of bigram.py: train again')
    return model.to(device or globals()['device']), ckpt['vocab']

if __name__ == '__main__':  # (also pasted into a notebook cell)
    if hasattr(sys.stdout, 'reconfigure'):  # lines out at once; unprintable: \xe9
        sys.stdout.reconfigure(line_buffering=True, errors='backslashreplace')
    try:  # (a notebook kernel's argv is not settings)
        main(sys.argv[1:] if '__file__' in globals() else [])
    except BrokenPipeError:  # python bigram.py | head: end quietly
        sys.stdout = None
        raise SystemExit(1) from None
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # bad input, or out of memory
        if isinstance(e, RuntimeError) and 'memory' not in str(e):
            raise  # (a bug: its traceback)
        print('error:', *str(e).split(), file=sys.stderr)  # (one line)
        raise SystemExit(2) from None  # (chained: old IPython prints a wall of its own)
