"""A character-level GPT, trained from scratch on one text file (Tiny Shakespeare unless told otherwise).

    python gpt.py                                        train on input.txt, save gpt.pt, print a sample
    python gpt.py --input_file=my_text.txt               train on your own text (any UTF-8 text)
    python gpt.py --sample_only=True --prompt="ROMEO:"   sample from gpt.pt without training
    python gpt.py --resume=True                          go on training from gpt.pt
    torchrun --standalone --nproc_per_node=8 gpt.py      train on 8 GPUs (or 8 CPU processes)
Every setting below can be overridden as --name=value. The ideas come first: the settings, the model, training
and sampling; below the banner further down is only plumbing (command line, files, checkpoints, processes).
"""
import ast, dataclasses, hashlib, math, os, pathlib, signal, sys, threading, time, timeit, urllib.request, warnings
warnings.filterwarnings('ignore', message='Failed to initialize NumPy')  # torch works without numpy, and says so
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

HERE = os.path.dirname(os.path.abspath(__file__))
GPU = torch.cuda.is_available()  # the model's size depends on it: see below
# ---------------------------------------------------------------------------------- settings
input_file = os.path.join(HERE, 'input.txt')  # the training text (UTF-8); if it is missing, fetched from input_url
input_url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
checkpoint = os.path.join(HERE, 'gpt.pt')  # written at every evaluation and at the end
resume = False        # continue training from `checkpoint` instead of starting afresh
sample_only = False   # only load `checkpoint` and generate
# The model and its training. A CPU and a GPU cannot share one size: in about five minutes two CPU cores train
# a 4 x 192 model on 128-character windows, while a GPU trains the lecture's 6 x 384 on 256 characters.
n_layer = 6 if GPU else 4          # transformer blocks
n_head = 6 if GPU else 4           # attention heads per block
n_embd = 384 if GPU else 192       # width of the residual stream
block_size = 256 if GPU else 128   # context length in characters
batch_size = 64 if GPU else 24     # sequences per step, in total over all processes
# How long to train, and how hard to regularise, follow from the text (see plan_training): a small text seen
# too many times is memorised, and a large vocabulary makes every step dearer. Each setting below at 0 (or -1)
# is chosen so; the settings line shows the values chosen, and passing them back repeats the run.
budget_iters = 3000 if GPU else 1000  # steps that fit the time budget (~5 CPU minutes) with a small vocabulary
max_passes = 50       # train on at most this many passes over the training split
max_iters = 0         # optimizer steps; the learning rate reaches zero at the last (0: from the two above)
dropout = -1.0        # (-1: none up to 3 passes over the text, 0.1 at 6, 0.2 at 12, 0.3 from 24 on)
eval_interval = 0     # steps between evaluations of the whole validation split, each one keeping the best model
                      # so far (0: after every 10 validation splits' worth of training, a few % of the time)
stop_after = 0        # end this run after this many steps (0: never) and save; --resume=True goes on
warmup_iters = 100    # steps of linear learning-rate warm-up
lr = 3e-3             # AdamW's learning rate (the output head)
embed_lr = 0.1        # AdamW's learning rate for the embedding table, which learns faster with a larger one
muon_lr = 0.02        # Muon's learning rate (the blocks' weight matrices)
grad_clip = 1.0       # clip the gradient norm to this (0: don't)
log_interval = 50     # steps between progress lines
seed = 1337           # seeds the initial weights, the batches and the sample
device = 'cuda' if GPU else 'mps' if torch.backends.mps.is_available() else 'cpu'  # or --device=cpu
dtype = 'auto'        # autocast precision of the matmuls: 'auto' takes the fastest this device runs natively
                      # (see pick_dtype), or 'bfloat16', 'float16' (with loss scaling), 'float32' (no autocast)
compile = GPU         # torch.compile pays for itself on a GPU, not in a few CPU minutes; off where it can't run
prompt = ''           # the sample continues this text ('': from the vocabulary's first character)
num_chars = 500       # characters to generate
temperature = 1.0     # <1 is more conservative, >1 more adventurous, 0 always takes the likeliest
top_k = 0             # sample among the k likeliest characters only (0: all)
sample_file = ''      # also write the sample to this file
SETTINGS = {k: v for k, v in globals().items() if k[0].islower() and isinstance(v, (bool, int, float, str))}

# ---------------------------------------------------------------------------------- the model
def rotate(x, cos, sin):  # rotary positions: turn each channel pair by an angle that grows with the position
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)

class KVCache:
    """One layer's keys and values of the window so far, so that a new character costs one position."""
    def __init__(self):
        self.kv, self.seen = None, 0  # kv (2, B, nh, block_size, hs); seen: positions that have come in

    def add(self, k, v):  # k, v (B, nh, T, hs) -> the cached keys and values, these included
        if self.kv is None:  # room for one window: generate starts a new cache before the window outgrows it
            self.kv = k.new_empty(2, k.size(0), k.size(1), block_size, k.size(3))
        self.kv[:, :, :, self.seen:self.seen + k.size(2)] = torch.stack((k, v))
        self.seen += k.size(2)
        return self.kv[:, :, :, :self.seen]

class CausalSelfAttention(nn.Module):
    """Multi-head attention: each position gathers from itself and the positions before it."""
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)  # query, key and value of all heads at once
        self.proj = nn.Linear(n_embd, n_embd, bias=False)

    def forward(self, x, cos, sin, cache=None):
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, n_head, C // n_head).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        if x.is_cpu:  # the CPU's attention is 3x (training) to 9x (sampling) faster in float32 (measured)
            qkv = qkv.float()
        v = qkv[2]
        # QK-norm: each head's queries and keys are normed, so that no update can make the attention scores
        # explode (it also lowered the CPU run's val loss by 0.03, measured); then they turn by position, and go
        # back to the values' dtype (autocast runs the norm in float32, and attention wants all three alike)
        q, k = rotate(F.layer_norm(qkv[:2], (C // n_head,)), cos, sin).type_as(v)
        if cache is not None:
            k, v = cache.add(k, v)
        with torch.autocast('cpu', enabled=False):  # so CPU autocast leaves them so; a GPU's is untouched
            # is_causal masks the future; a single new query may see every cached key
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, dropout_p=dropout if self.training else 0)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, nh, T, hs) -> (B, T, C): the heads side by side
        return self.proj(y.type_as(x))

class SwiGLU(nn.Module):
    """The MLP: half of its units gate the other half (better than GELU here, measured)."""
    def __init__(self):
        super().__init__()
        hidden = 8 * n_embd // 3  # two halves of this width hold as many weights as the usual 4x MLP
        self.up, self.down = nn.Linear(n_embd, 2 * hidden, bias=False), nn.Linear(hidden, n_embd, bias=False)

    def forward(self, x):
        gate, value = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * value)

def norm():  # each position's vector to zero mean and unit variance; learned gains and biases did not help
    return nn.LayerNorm(n_embd, elementwise_affine=False)

class Block(nn.Module):
    """Communication (attention) then computation (MLP), each added to the residual stream from a normed copy."""
    def __init__(self):
        super().__init__()
        self.ln1, self.attn, self.ln2, self.mlp = norm(), CausalSelfAttention(), norm(), SwiGLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cos, sin, cache=None):
        x = x + self.drop(self.attn(self.ln1(x), cos, sin, cache))
        return x + self.drop(self.mlp(self.ln2(x)))

class GPT(nn.Module):
    """Characters in, the next character's logits out: an embedding, the blocks, a norm and a linear head."""
    def __init__(self, vocab_size):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, n_embd)
        self.blocks = nn.ModuleList(Block() for _ in range(n_layer))
        self.ln_f, self.head = norm(), nn.Linear(n_embd, vocab_size, bias=False)
        for name, p in self.named_parameters():  # small weights, and branches that start near zero
            if p.ndim == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(('proj.weight', 'down.weight')) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx, targets=None, caches=None, start=0):  # idx (B, T) -> logits (B, T, vocab) or loss
        hs = n_embd // n_head  # angles in float32 whatever the weights are: positions run into the thousands
        freqs = 10000.0 ** -(torch.arange(0, hs, 2, device=idx.device) / hs)
        angles = torch.arange(start, start + idx.size(1), device=idx.device)[:, None] * freqs  # (T, hs/2)
        x = self.embed(idx)  # (B, T, C)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        for block, cache in zip(self.blocks, caches or [None] * n_layer):
            x = block(x, cos, sin, cache)
        logits = self.head(self.ln_f(x))
        return logits if targets is None else F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    @torch.inference_mode()
    def generate(self, idx, n, use_cache=True):  # idx (1, T) -> (1, T + n)
        # Every character is predicted as in training: from a window of at most block_size characters, the first
        # at position 0. A cached window cannot slide along: above the first layer, each cached key was computed
        # from characters that have since left the window, which recomputing the window would not see. So a full
        # window starts afresh from its last half, one forward pass every block_size / 2 characters, and the cache
        # computes exactly what recomputing would. (It also predicts Tiny Shakespeare slightly better than a
        # window sliding by one, recomputed or cached: measured, see README.)
        def fresh(window):  # (1, T) -> its logits, and the caches that now hold it
            caches = [KVCache() for _ in self.blocks] if use_cache else None
            return self(window, caches=caches), caches
        begin = max(0, idx.size(1) - block_size)  # where the window starts in idx
        logits, caches = fresh(idx[:, begin:])
        for _ in range(n):
            idx = torch.cat((idx, pick_next(logits[:, -1].float())), dim=1)
            if idx.size(1) - begin > block_size:  # full: keep its last half, rounded up
                begin = idx.size(1) - (block_size + 1) // 2
                logits, caches = fresh(idx[:, begin:])
            elif use_cache:  # one new position, its keys and values added to the cache
                logits = self(idx[:, -1:], caches=caches, start=idx.size(1) - 1 - begin)
            else:  # the whole window again: what the cache saves
                logits = self(idx[:, begin:])
        return idx

def pick_next(logits):  # logits (B, vocab) -> (B, 1), as temperature and top_k say
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    return torch.multinomial(F.softmax(logits, dim=-1), 1)

# ---------------------------------------------------------------------------------- the data
def plan_training(n_train, vocab_size):  # the settings left to the text: max_iters, dropout, eval_interval
    tokens = batch_size * block_size  # per step
    # per character, the blocks' matrices cost 12 n_layer n_embd^2 multiply-adds and the output layer
    # vocab_size n_embd (the step time follows this: measured 1.28x at 3,000 characters, 1.67x at 6,000)
    blocks = 12 * n_layer * n_embd ** 2
    affordable = budget_iters * (blocks + 65 * n_embd) // (blocks + vocab_size * n_embd)
    steps = max_iters or min(affordable, math.ceil(max_passes * n_train / tokens))
    passes = steps * tokens / n_train
    # dropout from how often each character is seen: none up to 3 passes, 0.1 more each time the passes double
    drop = dropout if dropout >= 0 else round(min(0.3, 0.1 * math.log2(max(1, passes / 3))), 2)
    if drop and device == 'cpu' and not max_iters:  # there it makes a step a third dearer (measured)
        steps = min(steps, affordable * 3 // 4)
    every = eval_interval or max(1, round(10 * n_train / 9 / tokens))  # the validation split is n_train / 9
    return dict(max_iters=steps, dropout=drop, eval_interval=every)

def split_data(text, chars):  # the characters as integers: the first 90% to train on, the rest to validate
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], device=device)
    n_train = int(0.9 * len(data))
    return data[:n_train], data[n_train:]

def get_batch(data, gen):  # every process draws the same batch_size windows and keeps its own share
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=gen)[RANK::WORLD]
    xy = data[(ix[:, None] + torch.arange(block_size + 1)).to(device)]  # (B, T + 1)
    return xy[:, :-1], xy[:, 1:]

@torch.no_grad()
def split_loss(model, data, amp):  # mean cross-entropy over the whole split, in consecutive non-overlapping windows
    n = (len(data) - 1) // block_size
    x, y = data[:n * block_size].view(n, block_size), data[1:n * block_size + 1].view(n, block_size)  # (n, T)
    model.eval()
    with amp:
        total = sum(model(x[i:i + 64], y[i:i + 64]).item() * len(x[i:i + 64]) for i in range(0, n, 64))
    model.train()
    return total / n

# ---------------------------------------------------------------------------------- training
@dataclasses.dataclass
class Run:
    """A run besides the weights: what a checkpoint keeps so that a resumed run goes on as if never stopped."""
    vocab: str
    optimizers: list
    scaler: torch.amp.GradScaler
    gen: torch.Generator  # draws the batches
    step: int = 0
    best: tuple = (math.inf, 0, None)  # the best evaluated val loss, its step, and a copy of those weights

def make_optimizers(model):  # Muon takes only the blocks' weight matrices, AdamW the rest
    matrices = [p for name, p in model.named_parameters() if p.ndim == 2 and name.startswith('blocks')]
    rest = [p for name, p in model.named_parameters() if not name.startswith(('blocks', 'embed'))]
    return [torch.optim.Muon(matrices, lr=muon_lr, weight_decay=0, ns_steps=3),  # 3 steps do as well as 5
            torch.optim.AdamW([dict(params=[model.embed.weight], lr=embed_lr), dict(params=rest, lr=lr)],
                              betas=(0.9, 0.95), weight_decay=0, fused=device != 'mps')]

def set_learning_rates(run):  # warm up, then decay linearly to zero at max_iters
    factor = min((run.step + 1) / (warmup_iters + 1), (max_iters - run.step) / max(1, max_iters - warmup_iters))
    groups = [g for opt in run.optimizers for g in opt.param_groups]
    for group, peak in zip(groups, (muon_lr, embed_lr, lr)):  # the rates given now, also when resuming
        group['lr'] = peak * factor

def optimizer_step(model, run, loss):  # backward, and one step of every optimizer
    run.scaler.scale(loss).backward()  # float16 only: the loss scaled up, so that small gradients stay non-zero
    for opt in run.optimizers:
        run.scaler.unscale_(opt)  # and the gradients back down, so that clipping sees the true ones
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for opt in run.optimizers:
        run.scaler.step(opt)  # (skipped where float16 gradients overflowed)
        opt.zero_grad(set_to_none=True)
    run.scaler.update()

def evaluate(model, run, val_data, amp):  # the val loss, keeping the best model so far (small texts overfit)
    val_loss = split_loss(model, val_data, amp)
    if val_loss < run.best[0]:
        run.best = (val_loss, run.step, {k: v.clone() for k, v in model.state_dict().items()})
    print(f'step {run.step}: val loss {val_loss:.4f} (best {run.best[0]:.4f} at step {run.best[1]})')

def train(model, run, train_data, val_data, amp):
    net = torch.compile(model) if compile and compile_works() else model
    net = DistributedDataParallel(net) if DDP else net
    stop = threading.Event()  # Ctrl-C (or torchrun's SIGTERM) ends the run cleanly at the end of the step
    before = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    last = min(max_iters, run.step + stop_after) if stop_after else max_iters
    clock = (time.time(), run.step)  # for the progress lines: since when, and since which step
    while run.step < last:
        set_learning_rates(run)
        x, y = get_batch(train_data, run.gen)
        with amp:
            loss = net(x, y)
        optimizer_step(model, run, loss)
        run.step += 1
        loss, stopping = agree(loss.item(), stop.is_set())
        if not math.isfinite(loss):
            fail(f'the loss became {loss} at step {run.step}; stopped, the last checkpoint written is untouched')
        if MASTER and (run.step % log_interval == 0 or run.step == last):
            clock = log_progress(run.step, last, loss, clock)
        if stopping and MASTER:
            save_checkpoint(model, run)
            print(f'interrupted at step {run.step}: checkpoint saved to {checkpoint}')
        if stopping:
            sys.exit(130)
        if MASTER and run.step % eval_interval == 0 and run.step < last:
            evaluate(model, run, val_data, amp)
            save_checkpoint(model, run)
            clock = (time.time(), run.step)  # evaluation time is not training time
    for sig, handler in before.items():
        signal.signal(sig, handler)

def finish(model, run, train_data, val_data, amp):  # the final line reports the best model found, and saves it
    val_loss = split_loss(model, val_data, amp)
    best_val, best_step, best_weights = run.best
    if val_loss > best_val:  # past the turn: the model of the best evaluation is the one to keep
        print(f'val loss {val_loss:.4f} at the end, {best_val:.4f} at step {best_step}: keeping that model')
        model.load_state_dict(best_weights)
        val_loss = best_val
    # the train loss over a stretch as long as the validation split (the whole takes 9x as long)
    train_loss = split_loss(model, train_data[:len(val_data)], amp)
    print(f'final: train loss {train_loss:.4f}, val loss {val_loss:.4f}')
    save_checkpoint(model, run)
    print(f'saved {checkpoint}')

# ---------------------------------------------------------------------------------- sampling
def sample(model, chars):
    stoi = {c: i for i, c in enumerate(chars)}
    context = torch.tensor([[stoi[c] for c in prompt or chars[0]]], device=device)  # (1, T)
    # each new character reads every weight, so a GPU's are cast once to half precision. A CPU keeps float32: per
    # character as fast as float16 at the CPU model's size, and 5x faster at the forward pass over half a window
    # that generate makes every block_size / 2 characters (a CPU multiplies float16 matrices slowly; measured)
    model.eval().to(getattr(torch, 'float32' if device == 'cpu' else dtype))
    return ''.join(chars[i] for i in model.generate(context, num_chars)[0].tolist())

def main():
    explicit = apply_overrides(sys.argv[1:])
    start_processes()
    ckpt = load_checkpoint(checkpoint, explicit) if resume or sample_only else None
    text = None if sample_only else read_text(input_file, ckpt)
    chars = ckpt['vocab'] if ckpt else ''.join(sorted(set(text)))  # the vocabulary: every distinct character
    check_prompt(chars)
    # what is left to the text is chosen from it before the model is built (dropout is part of it)
    globals().update(plan_training(int(0.9 * len(text)), len(chars)) if text else dict(dropout=0.0))
    torch.manual_seed(seed)
    model = GPT(len(chars)).to(device)
    if ckpt:
        load_weights(model, ckpt)
    globals()['dtype'], why = pick_dtype()
    amp = torch.autocast(device.split(':')[0], dtype=getattr(torch, dtype), enabled=dtype != 'float32')
    announce(model, chars, why, text)
    if text:
        train_data, val_data = split_data(text, chars)
        run = start_run(model, chars, ckpt)
        train(model, run, train_data, val_data, amp)
        if MASTER:
            finish(model, run, train_data, val_data, amp)
    if MASTER:
        generated = sample(model, chars)
        print(generated)
        if sample_file:
            write_atomically(sample_file, lambda f: f.write(generated.encode('utf-8')))
    end_processes()

# =============================================================================================================
# Here ends what there is to learn about a GPT. Below is plumbing: settings from the command line, the text and
# its download, checkpoints, precision, torch.compile, several processes, Ctrl-C. A reader may stop here.
# =============================================================================================================
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
    problems = [f'{k} must be positive' for k in ('n_layer', 'n_head', 'n_embd', 'block_size', 'batch_size',
                                                  'budget_iters', 'max_passes', 'log_interval') if globals()[k] <= 0]
    problems += [f'{k} must be positive, or 0 to choose it from the text' for k in ('max_iters', 'eval_interval')
                 if globals()[k] < 0]
    problems += [f'{k} must be between 0 and 1e30' for k in ('stop_after', 'warmup_iters', 'num_chars', 'top_k',
                 'temperature', 'grad_clip', 'lr', 'embed_lr', 'muon_lr') if not 0 <= globals()[k] < 1e30]
    if n_embd % n_head or (n_embd // n_head) % 2:
        problems.append(f'n_embd ({n_embd}) must split into n_head ({n_head}) heads of even size')
    if not (0 <= dropout < 1 or dropout == -1) or dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
        problems.append("dropout must be in [0, 1) (or -1) and dtype 'auto', 'float32', 'bfloat16' or 'float16'")
    if not os.path.isdir(os.path.dirname(os.path.abspath(checkpoint))):
        problems.append(f'checkpoint {checkpoint} is in a folder that does not exist')
    if problems:
        fail('; '.join(problems))
    try:
        torch.empty(1, device=device)
    except Exception as e:
        fail(f'device {device!r} cannot be used here ({str(e).splitlines()[0]})')
    return {arg.removeprefix('--').partition('=')[0] for arg in args}

def announce(model, chars, why, text):  # the start lines: what runs where, and every setting as it stands
    if not MASTER:
        return
    print(f'device {device}, dtype {dtype} ({why}), {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M '
          f'parameters, vocabulary {len(chars)}, {WORLD} process{"es" if WORLD > 1 else ""}')
    if text:
        n_train = int(0.9 * len(text))
        print(f'training {max_iters} steps: {max_iters * batch_size * block_size / n_train:.1f} passes over '
              f'{n_train:,} characters, dropout {dropout}, evaluating every {eval_interval} steps')
    print('settings: ' + ' '.join(f'{k}={globals()[k]!r}' for k in SETTINGS))

def log_progress(step, last, loss, clock):  # one progress line; returns the clock for the next one
    dt = (time.time() - clock[0]) / (step - clock[1])
    print(f'step {step}/{max_iters} | loss {loss:.4f} | {dt * 1000:.0f} ms/step | '
          f'{batch_size * block_size / dt:,.0f} tokens/s | {(last - step) * dt / 60:.1f} min left')
    return time.time(), step

# ---------------------------------------------------------------------------------- files
def write_atomically(path, write):  # a crash while writing leaves the old file as it was
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        pathlib.Path(tmp).unlink(missing_ok=True)
        fail(f'cannot write {path}: {e.strerror}')

def download_tiny_shakespeare(path):
    try:
        data = urllib.request.urlopen(input_url, timeout=60).read()
        problem = '' if hashlib.sha256(data).hexdigest() == SHA256 else 'it sent something else (wrong sha256)'
    except (OSError, ValueError) as e:
        problem = f'failed ({e})'
    if problem:
        fail(f'{path} is missing and downloading {input_url} {problem}; put a text file there or pass --input_file=PATH')
    write_atomically(path, lambda f: f.write(data))
    print(f'downloaded Tiny Shakespeare ({len(data):,} bytes, sha256 checked) to {path}')

def read_text(path, ckpt):  # the training text, checked against what training needs
    if path == SETTINGS['input_file'] and not os.path.exists(path):
        download_tiny_shakespeare(path)
    try:
        text = pathlib.Path(path).read_bytes().decode('utf-8')
    except OSError as e:  # missing, a directory, no permission...
        fail(f'cannot read input file {path}: {e.strerror}; put a text file there or pass --input_file=PATH')
    except UnicodeDecodeError as e:
        fail(f'input file {path} is not valid UTF-8 (bad byte at offset {e.start})')
    unknown = ''.join(sorted(set(text) - set(ckpt['vocab']))) if ckpt else ''
    if unknown:
        fail(f'{path} has characters that {checkpoint} has never seen: {unknown!r}')
    if len(text) < 10 * (block_size + 1):  # both splits need at least one window and its next character
        fail(f'{path} has {len(text)} characters, fewer than the {10 * (block_size + 1)} needed')
    return text

def check_prompt(chars):
    unknown = ''.join(sorted(set(prompt) - set(chars)))
    if unknown:
        fail(f'the prompt has characters that are not in the vocabulary: {unknown!r}')

# ---------------------------------------------------------------------------------- checkpoints
def load_checkpoint(path, explicit):  # the model's shape comes from the checkpoint; another explicit one is an error
    if not os.path.isfile(path):
        fail(f'checkpoint {path} does not exist; train first, or pass --checkpoint=PATH')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)  # weights_only: never runs code
    except Exception as e:
        fail(f'checkpoint {path} cannot be loaded, truncated or not a checkpoint ({str(e).splitlines()[0][:100]})')
    origin = ckpt.get('script') if isinstance(ckpt, dict) else None
    if origin != 'gpt.py':
        fail(f'{path} is not a gpt.py checkpoint (it comes from {origin or "something else"})')
    for k in ('n_layer', 'n_head', 'n_embd', 'block_size'):
        if k in explicit and globals()[k] != ckpt['settings'][k]:
            fail(f'--{k}={globals()[k]} does not fit {path}, whose model has {k}={ckpt["settings"][k]}')
        globals()[k] = ckpt['settings'][k]
    return ckpt

def load_weights(model, ckpt):
    try:
        model.load_state_dict(ckpt['model'])
    except RuntimeError:  # other weights' names or shapes: written by another version of this script
        fail(f'{checkpoint} holds weights that do not fit this model (from another version of gpt.py?)')

def start_run(model, chars, ckpt):  # a new run, or the one in the checkpoint: optimizers, step and random numbers
    scaler = torch.amp.GradScaler(device.split(':')[0], enabled=dtype == 'float16')
    run = Run(chars, make_optimizers(model), scaler, torch.Generator().manual_seed(seed))
    if ckpt:
        for opt, state in zip(run.optimizers, ckpt['optimizers']):
            opt.load_state_dict(state)
        run.scaler.load_state_dict(ckpt['scaler'])
        run.gen.set_state(ckpt['rng'])
        torch.set_rng_state(ckpt['torch_rng'])
        run.step, run.best = ckpt['step'], ckpt['best']
    return run

def save_checkpoint(model, run):  # never over a good checkpoint with a broken model
    if not all(p.isfinite().all() for p in model.parameters()):
        fail(f'the weights became non-finite by step {run.step}; stopped, {checkpoint} is untouched')
    state = {'script': 'gpt.py', 'model': model.state_dict(), 'vocab': run.vocab, 'step': run.step,
             'settings': {k: globals()[k] for k in SETTINGS}, 'rng': run.gen.get_state(),
             'torch_rng': torch.get_rng_state(), 'optimizers': [o.state_dict() for o in run.optimizers],
             'scaler': run.scaler.state_dict(), 'best': run.best}
    write_atomically(checkpoint, lambda f: torch.save(state, f))

# ---------------------------------------------------------------------------------- precision and compilation
def pick_dtype():  # the precision to train in, and why: the start line says both
    if dtype != 'auto':
        return dtype, 'as asked'
    if device.startswith('cuda'):  # T4s, V100s and older cards have no bfloat16: float16 with loss scaling there
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return ('bfloat16', 'native on this GPU') if native else ('float16', 'this GPU has no native bfloat16')
    if device == 'mps':  # Metal has bfloat16 from macOS 14 on; before that, full precision
        try:
            torch.ones(1, device=device, dtype=torch.bfloat16)
            return 'bfloat16', 'supported on this Mac'
        except (RuntimeError, TypeError):
            return 'float32', 'no bfloat16 on this Mac'
    # A CPU with bfloat16 instructions (AVX-512 BF16, AMX) multiplies 1.6-5x faster in it than in float32; one
    # without (most laptops) emulates it 10-80x slower. Timing one small product each way tells which this is.
    def fastest(m):  # of six products (the first one warms up)
        return min(timeit.repeat(lambda: m @ m, number=1, repeat=6))
    m = torch.randn(256, 256)
    speedup = fastest(m) / fastest(m.bfloat16())
    if speedup > 1:
        return 'bfloat16', f'native on this CPU: {speedup:.1f}x float32\'s matmul speed'
    return 'float32', f'bfloat16 is emulated on this CPU: {speedup:.2f}x float32\'s matmul speed'

def compile_works():  # torch.compile needs Triton on a GPU and a C++ compiler on a CPU; try a tiny function
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2, device=device))
        return True
    except Exception as e:
        print(f'torch.compile cannot run here ({str(e).strip().splitlines()[0][:120]}); training without it')
        return False

# ---------------------------------------------------------------------------------- processes and signals
DDP = 'LOCAL_RANK' in os.environ  # under torchrun: one process per device, each taking its share of every batch
RANK, WORLD, MASTER = 0, 1, True  # MASTER: the first process, the only one that prints, evaluates, saves, samples

def start_processes():
    global RANK, WORLD, MASTER
    if not DDP:
        return
    dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo')
    RANK, WORLD = dist.get_rank(), dist.get_world_size()
    MASTER = RANK == 0
    if device.startswith('cuda'):
        globals()['device'] = f'cuda:{os.environ["LOCAL_RANK"]}'
        torch.cuda.set_device(device)
    if batch_size % WORLD:
        fail(f'batch_size ({batch_size}) must divide evenly among {WORLD} processes')

def agree(loss, stop):  # the mean loss over all processes, and a stop that any of them asked for
    status = torch.tensor([loss, float(stop)])
    if DDP:
        dist.all_reduce(status)
        status[0] /= WORLD
    return status[0].item(), bool(status[1])

def end_processes():  # the others wait for the first process's evaluation, so that all part together
    if DDP:
        dist.barrier()
        dist.destroy_process_group()

if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:  # outside the training loop there is nothing to save
        sys.exit(130)
    if DDP:  # gloo's threads outlive destroy_process_group (once torch._dynamo is imported, as the optimizers do)
        sys.stdout.flush()  # and can abort a normal exit, so leave at once
        os._exit(0)
