"""The bigram baseline: the next character's logits are read off a table row chosen by the current character.

    python bigram.py                                        train, save bigram.pt, print a sample
    python bigram.py --sample_only=True --prompt="ROMEO:"   sample from bigram.pt without training
Every setting below can be overridden as --name=value.
"""
import ast, hashlib, math, os, signal, sys, time, urllib.request, warnings
warnings.filterwarnings('ignore', message='Failed to initialize NumPy')  # torch works without numpy, and says so
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
# ---------------------------------------------------------------------------------- settings
input_file = os.path.join(HERE, 'input.txt')  # the training text (UTF-8); if it is missing, fetched from input_url
input_url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
checkpoint = os.path.join(HERE, 'bigram.pt')  # written at the end of training
resume = False        # continue training from `checkpoint` instead of starting afresh
sample_only = False   # only load `checkpoint` and generate
block_size = 256      # characters per window; a bigram only looks one back, so long windows just batch more
batch_size = 64       # windows per step: large batches give a smooth estimate of the whole table's loss
max_iters = 150       # optimizer steps; the learning rate decays linearly to zero at the last
stop_after = 0        # end this run after this many steps (0: never) and save; --resume=True goes on
lr = 0.3              # AdamW's learning rate: a lookup table tolerates a large one
weight_decay = 0.01   # pulls unseen pairs' logits towards uniform, a little smoothing
eval_interval = 50    # steps between evaluations on the whole validation split
log_interval = 25     # steps between progress lines
seed = 1337           # seeds the initial table, the batches and the sample
device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
prompt = ''           # the sample continues this text ('': from the vocabulary's first character)
num_chars = 500       # characters to generate
temperature = 1.0     # <1 is more conservative, >1 more adventurous, 0 always takes the likeliest
top_k = 0             # sample among the k likeliest characters only (0: all)
sample_file = ''      # also write the sample to this file
SETTINGS = {k: v for k, v in globals().items() if k[0].islower() and isinstance(v, (bool, int, float, str))}
SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'  # of Tiny Shakespeare


def fail(message):  # bad input of any kind ends here: one line, exit status 2, no traceback
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def apply_overrides(args):  # --name=value, value a Python literal (taken as it is for text settings)
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
        globals()[name] = value
    problems = [f'{k} must be positive' for k in ('block_size', 'batch_size', 'max_iters', 'eval_interval',
                                                  'log_interval') if globals()[k] <= 0]
    problems += [f'{k} must be between 0 and 1e30' for k in ('stop_after', 'num_chars', 'top_k', 'temperature',
                 'lr', 'weight_decay') if not 0 <= globals()[k] < 1e30]
    if not os.path.isdir(os.path.dirname(os.path.abspath(checkpoint))):
        problems.append(f'checkpoint {checkpoint} is in a folder that does not exist')
    if problems:
        fail('; '.join(problems))
    try:
        torch.empty(1, device=device)
    except Exception as e:
        fail(f'device {device!r} cannot be used here ({str(e).splitlines()[0]})')


def write_atomically(path, write):  # a crash while writing leaves the old file as it was
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        fail(f'cannot write {path}: {e.strerror}')


def read_text(path):
    if path == SETTINGS['input_file'] and not os.path.exists(path):
        try:
            data = urllib.request.urlopen(input_url, timeout=60).read()
            problem = '' if hashlib.sha256(data).hexdigest() == SHA256 else 'it sent something else (wrong sha256)'
        except (OSError, ValueError) as e:
            problem = f'failed ({e})'
        if problem:
            fail(f'{path} is missing and downloading {input_url} {problem}; '
                 'put a text file there or pass --input_file=PATH')
        write_atomically(path, lambda f: f.write(data))
        print(f'downloaded Tiny Shakespeare ({len(data):,} bytes, sha256 checked) to {path}')
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:  # missing, a directory, no permission...
        fail(f'cannot read input file {path}: {e.strerror}; put a text file there or pass --input_file=PATH')
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as e:
        fail(f'input file {path} is not valid UTF-8 (bad byte at offset {e.start})')


def load_checkpoint(path):
    if not os.path.isfile(path):
        fail(f'checkpoint {path} does not exist; train first, or pass --checkpoint=PATH')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)  # weights_only: never runs code
    except Exception as e:
        fail(f'checkpoint {path} cannot be loaded, truncated or not a checkpoint ({str(e).splitlines()[0][:100]})')
    origin = ckpt.get('script') if isinstance(ckpt, dict) else None
    if origin != 'bigram.py':
        fail(f'{path} is not a bigram.py checkpoint (it comes from {origin or "something else"})')
    return ckpt


# ---------------------------------------------------------------------------------- the model
class Bigram(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.table = nn.Embedding(vocab_size, vocab_size)  # row c: the logits of whatever follows c
        nn.init.zeros_(self.table.weight)  # start from the uniform guess, not from random preferences

    def forward(self, idx, targets=None):  # idx (B, T) -> logits (B, T, vocab) or the mean loss
        logits = self.table(idx)
        return logits if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    @torch.no_grad()
    def generate(self, idx, n):  # idx (1, T) -> (1, T + n); only the last character matters
        for _ in range(n):
            logits = self(idx[:, -1:])[:, -1]
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float('-inf'))
                nxt = torch.multinomial(F.softmax(logits, dim=-1), 1)
            idx = torch.cat((idx, nxt), dim=1)
        return idx


# ---------------------------------------------------------------------------------- training
def main():
    apply_overrides(sys.argv[1:])
    ckpt = load_checkpoint(checkpoint) if resume or sample_only else None
    if not sample_only:
        text = read_text(input_file)
        unknown = ''.join(sorted(set(text) - set(ckpt['vocab']))) if ckpt else ''
        if unknown:
            fail(f'{input_file} has characters that {checkpoint} has never seen: {unknown!r}')
        if len(text) < 10 * (block_size + 1):  # both splits need at least one window and its next character
            fail(f'{input_file} has {len(text)} characters, fewer than the {10 * (block_size + 1)} needed')
    chars = ckpt['vocab'] if ckpt else ''.join(sorted(set(text)))  # the vocabulary: every distinct character
    stoi = {c: i for i, c in enumerate(chars)}
    unknown = ''.join(sorted(set(prompt) - set(chars)))
    if unknown:
        fail(f'the prompt has characters that are not in the vocabulary: {unknown!r}')

    torch.manual_seed(seed)
    model = Bigram(len(chars)).to(device)
    if ckpt:
        try:
            model.load_state_dict(ckpt['model'])
        except RuntimeError:  # other weights' names or shapes: written by another version of this script
            fail(f'{checkpoint} holds weights that do not fit this model (from another version of bigram.py?)')
    print(f'device {device}, {sum(p.numel() for p in model.parameters()):,} parameters, vocabulary {len(chars)}')
    print('settings: ' + ' '.join(f'{k}={globals()[k]!r}' for k in SETTINGS))

    if not sample_only:
        data = torch.tensor([stoi[c] for c in text], device=device)
        train_data, val_data = data[:int(0.9 * len(data))], data[int(0.9 * len(data)):]
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)  # draws the batches; saved so that a resumed run draws the same
        step = 0
        if ckpt:  # resuming: the optimizer, the step count and the random numbers go on too
            optimizer.load_state_dict(ckpt['optimizer'])
            step = ckpt['step']
            gen.set_state(ckpt['rng'])
            torch.set_rng_state(ckpt['torch_rng'])

        def save():  # never over a good checkpoint with a broken model
            if not model.table.weight.isfinite().all():
                fail(f'the weights became non-finite by step {step}; stopped, {checkpoint} is untouched')
            state = {'script': 'bigram.py', 'model': model.state_dict(), 'vocab': chars, 'step': step,
                     'settings': {k: globals()[k] for k in SETTINGS}, 'optimizer': optimizer.state_dict(),
                     'rng': gen.get_state(), 'torch_rng': torch.get_rng_state()}
            write_atomically(checkpoint, lambda f: torch.save(state, f))

        @torch.no_grad()
        def split_loss(data):  # mean cross-entropy over the whole split, in consecutive non-overlapping windows
            n = (len(data) - 1) // block_size
            x, y = data[:n * block_size].view(n, block_size), data[1:n * block_size + 1].view(n, block_size)
            return sum(model(x[i:i + 256], y[i:i + 256]).item() * len(x[i:i + 256]) for i in range(0, n, 256)) / n

        def get_batch():
            ix = torch.randint(len(train_data) - block_size, (batch_size,), generator=gen)
            xy = train_data[(ix[:, None] + torch.arange(block_size + 1)).to(device)]  # (B, T + 1)
            return xy[:, :-1], xy[:, 1:]

        stop = []  # Ctrl-C ends the run cleanly at the end of the current step
        signal.signal(signal.SIGINT, lambda *_: stop.append(True))
        last = min(max_iters, step + stop_after) if stop_after else max_iters
        t_log, s_log = time.time(), step
        while step < last:
            for group in optimizer.param_groups:
                group['lr'] = lr * (max_iters - step) / max_iters  # decays linearly to zero at max_iters
            x, y = get_batch()
            loss = model(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss = loss.item()
            if not math.isfinite(loss):
                fail(f'the loss became {loss} at step {step}; stopped, the last checkpoint written is untouched')
            if step % log_interval == 0 or step == last:
                dt = (time.time() - t_log) / (step - s_log)
                print(f'step {step}/{max_iters} | loss {loss:.4f} | {dt * 1000:.1f} ms/step | '
                      f'{batch_size * block_size / dt:,.0f} tokens/s | {(last - step) * dt:.1f} s left')
                t_log, s_log = time.time(), step
            if stop:
                save()
                print(f'interrupted at step {step}: checkpoint saved to {checkpoint}')
                sys.exit(130)
            if step % eval_interval == 0 and step < last:
                print(f'step {step}: val loss {split_loss(val_data):.4f}')
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(f'final: train loss {split_loss(train_data):.4f}, val loss {split_loss(val_data):.4f}')
        save()
        print(f'saved {checkpoint}')

    # ---------------------------------------------------------------------------------- sampling
    context = torch.tensor([[stoi[c] for c in prompt or chars[0]]], device=device)
    sample = ''.join(chars[i] for i in model.generate(context, num_chars)[0].tolist())
    print(sample)
    if sample_file:
        write_atomically(sample_file, lambda f: f.write(sample.encode('utf-8')))


if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:  # outside the training loop there is nothing to save
        sys.exit(130)
