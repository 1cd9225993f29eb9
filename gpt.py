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
START = time.time()  # the time budget is for the whole run, importing torch included
warnings.filterwarnings('ignore', message='Failed to initialize NumPy')  # torch works without numpy, and says so
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

HERE = os.path.dirname(os.path.abspath(__file__))
GPU = torch.cuda.is_available() and not any(a.startswith('--device=cpu') for a in sys.argv)  # (told: no GPU)
# ---------------------------------------------------------------------------------- settings
input_file = os.path.join(HERE, 'input.txt')  # the training text (UTF-8); if it is missing, fetched from input_url
input_url = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
checkpoint = os.path.join(HERE, 'gpt.pt')  # written at every evaluation and at the end
resume = False        # continue training from `checkpoint` instead of starting afresh
sample_only = False   # only load `checkpoint` and generate
# The model's size and the run's length follow the time given, the machine and the text (see plan_model and
# plan_training): a slow laptop trains a smaller model than a GPU, and a small text seen too many times is
# memorised. Each setting below at 0 (or -1) is chosen so, once, before training; the start lines say what was
# chosen and why, and passing the values back (--n_layer=... --max_iters=...) repeats the run exactly.
time_budget = 300.0   # seconds for the whole run, start to sample, on this machine
n_layer = 0           # transformer blocks
n_head = 0            # attention heads per block
n_embd = 0            # width of the residual stream
block_size = 0        # context length in characters
batch_size = 0        # sequences per step, in total over all processes
max_iters = 0         # optimizer steps; the learning rate reaches zero at the last
max_passes = 50       # train on at most this many passes over the training split
dropout = -1.0        # (-1: none below 6 passes over the text, 0.1 from 6, 0.2 from 12, 0.3 from 24 on)
eval_interval = 0     # steps between evaluations, each one keeping the best model so far (0: after every 10
                      # evaluations' worth of training characters, a few % of the time)
eval_chars = 250_000  # an evaluation reads the whole validation split, or this many characters of it evenly spread
stop_after = 0        # end this run after this many steps (0: never) and save; --resume=True goes on
warmup_iters = 100    # steps of linear learning-rate warm-up
lr = 3e-3             # AdamW's learning rate (the output head)
embed_lr = 0.1        # AdamW's learning rate for the embedding table, which learns faster with a larger one
pair_rows = 16384     # rows of the table embedding each character with the one before it (0: none; past it, shared)
pair_lr = 0.003       # AdamW's learning rate for that table, whose rows are each seen far less often (0.1 memorised)
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

def drop(x, training):  # dropout, written out: F.dropout draws its masks 2x slower on a CPU (measured)
    if not training or dropout == 0:
        return x
    if x.is_cpu:  # a CPU makes random numbers one at a time: four 16-bit ones per 64-bit draw, 1.6-2.5x faster
        draws = torch.randint(-2 ** 63, 2 ** 63 - 1, (x.numel() // 4 + 1,)).view(torch.int16)[:x.numel()]
        kept = draws.view(x.shape) >= min(round(65536 * dropout), 65535) - 32768  # (each from -32768 to 32767)
    else:  # each element kept with probability 1 - dropout
        kept = torch.rand(x.shape, device=x.device) >= dropout
    return x * kept / (1 - dropout)  # and scaled up, so that what passes on is as large on average

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
        precision = qkv.dtype
        if x.is_cpu and precision != torch.bfloat16:  # a CPU's fused attention: 3x (training) to 9x (sampling)
            qkv = qkv.float()  # faster in float32 than in a half precision it has no instructions for (measured)
        v = qkv[2]
        # QK-norm: each head's queries and keys are normed, so that no update can make the attention scores
        # explode (it also lowered the CPU run's val loss by 0.03, measured); then they turn by position, and go
        # back to the values' dtype (autocast runs the norm in float32, and attention wants all three alike)
        q, k = rotate(F.layer_norm(qkv[:2], (C // n_head,)), cos, sin).type_as(v)
        if cache is not None:
            k, v = cache.add(k, v)
        if x.is_cpu and v.dtype == torch.bfloat16:  # in bfloat16 the CPU's fused kernel is slow (it computes in
            y = self.explicit(q, k, v)  # float32); the lecture's form is 2x faster at 128 positions (measured)
        else:  # is_causal masks the future; a single new query may see every cached key
            with torch.autocast('cpu', enabled=False):  # (on a CPU, so that autocast leaves float32 as it is)
                y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, dropout_p=dropout * self.training)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, nh, T, hs) -> (B, T, C): the heads side by side
        return self.proj(y.to(precision))  # (from float32, where the CPU's attention took it)

    def explicit(self, q, k, v):  # q (B, nh, T, hs), k and v (B, nh, S, hs) -> (B, nh, T, hs), as in the lecture
        T, S = q.size(-2), k.size(-2)
        scores = (q * q.size(-1) ** -0.5) @ k.transpose(-2, -1)  # (B, nh, T, S); scaled as q, the smaller
        seen = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)  # each query, the keys up to its own
        weights = drop(scores.masked_fill(~seen, float('-inf')).softmax(dim=-1), self.training)
        return weights @ v

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

    def forward(self, x, cos, sin, cache=None):
        x = x + drop(self.attn(self.ln1(x), cos, sin, cache), self.training)
        return x + drop(self.mlp(self.ln2(x)), self.training)

class GPT(nn.Module):
    """Characters in, the next character's logits out: embeddings, the blocks, a norm and a linear head."""
    def __init__(self, vocab_size):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, n_embd)
        # each character with the one before it, as a pair: what a trigram counts, there from the first step, not
        # assembled by attention from two characters seen apart (0.07 lower on an order-2 Markov text; TUNING.md)
        self.pairs = nn.Embedding(min(pair_rows, (vocab_size + 1) * vocab_size), n_embd) if pair_rows else None
        self.blocks = nn.ModuleList(Block() for _ in range(n_layer))
        self.ln_f, self.head = norm(), nn.Linear(n_embd, vocab_size, bias=False)
        for name, p in self.named_parameters():  # small weights, and branches that start near zero
            if p.ndim == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(('proj.weight', 'down.weight')) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx, targets=None, caches=None, start=0, before=None):  # idx (B, T) -> logits or loss
        hs = n_embd // n_head  # the angles in float32, then in the activations' precision
        freqs = 10000.0 ** -(torch.arange(0, hs, 2, device=idx.device) / hs)
        angles = torch.arange(start, start + idx.size(1), device=idx.device)[:, None] * freqs  # (T, hs/2)
        x = self.embed(idx)  # (B, T, C)
        if self.pairs is not None:  # before (B, 1): the character before idx's first; none (V) starts a window
            V = self.embed.num_embeddings
            previous = F.pad(idx[:, :-1], (1, 0), value=V) if before is None else torch.cat((before, idx[:, :-1]), 1)
            x = x + self.pairs((previous * V + idx) % self.pairs.num_embeddings)  # (V + 1) * V rows, or shared
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        for block, cache in zip(self.blocks, caches or [None] * n_layer):
            x = block(x, cos, sin, cache)
        logits = self.head(self.ln_f(x))
        return logits if targets is None else F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    @torch.inference_mode()
    def generate(self, idx, n, use_cache=True):  # idx (1, T) -> (1, T + n)
        # Every character is predicted as in training, from a window of at most block_size characters. A cached
        # window cannot slide along (above the first layer its keys hold characters that have left it), so a full
        # window starts afresh from its last half and the cache computes exactly what recomputing would (README)
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
                logits = self(idx[:, -1:], caches=caches, start=idx.size(1) - 1 - begin, before=idx[:, -2:-1])
            else:  # the whole window again: what the cache saves
                logits = self(idx[:, begin:])
        return idx

def pick_next(logits):  # logits (B, vocab) -> (B, 1), as temperature and top_k say
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = (logits - logits.max(-1, keepdim=True).values) / temperature  # (the largest at 0: no inf/inf)
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    return torch.multinomial(F.softmax(logits, dim=-1), 1)

# ---------------------------------------------------------------------------------- the data
# read_data (below the banner) turns the text into integers: the vocabulary is every distinct character in order,
# and each character becomes its place in it (the lecture's stoi), one byte each for up to 256 distinct ones
def split_data(data):  # the first 90% to train on, the rest to validate
    n_train = int(0.9 * len(data))
    return data[:n_train].to(device), data[n_train:].to(device)

def get_batch(data, gen):  # every process draws the same batch_size windows and keeps its own share
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=gen)[RANK::WORLD]
    xy = data[(ix[:, None] + torch.arange(block_size + 1)).to(device)].long()  # (B, T + 1)
    return xy[:, :-1], xy[:, 1:]

def eval_windows(data):  # the starts of the split's consecutive non-overlapping windows, or of eval_chars'
    # worth of them evenly spread (a large text: every evaluation costs the same bounded time)
    n = (len(data) - 1) // block_size
    return torch.linspace(0, n - 1, max(1, min(n, eval_chars // block_size))).round().long() * block_size

@torch.no_grad()
def split_loss(model, data, amp):  # mean cross-entropy over the split's evaluation windows
    starts = eval_windows(data)
    model.eval()
    total = 0.0
    for i in range(0, len(starts), 64):
        xy = data[(starts[i:i + 64, None] + torch.arange(block_size + 1)).to(device)].long()  # (64, T + 1)
        with amp:
            total += model(xy[:, :-1], xy[:, 1:]).item() * len(xy)
    model.train()
    return total / len(starts)

# ---------------------------------------------------------------------------------- the plan: how large, how long
SIZES = [  # (n_layer, n_head, n_embd, block_size, batch_size), smallest first
    (3, 4, 128, 128, 24),  # a laptop's CPU without bfloat16
    (4, 4, 192, 128, 24),  # two CPU cores with bfloat16
    (6, 8, 256, 256, 32),  # a fast CPU, a Mac
    (6, 6, 384, 256, 64)]  # a GPU: the lecture's size
MIN_STEPS = 1000  # a larger model learns more from each step, but with fewer steps than this a smaller one wins
# plan (below the banner) times these sizes here and takes the largest that trains MIN_STEPS steps in time_budget,
# as many steps as fit, and dropout from how often the text would be seen: see plan_model and plan_training

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
    rest = [p for name, p in model.named_parameters() if not name.startswith(('blocks', 'embed', 'pairs'))]
    pairs = [model.pairs.weight] if model.pairs is not None else []
    return [torch.optim.Muon(matrices, lr=muon_lr, weight_decay=0, ns_steps=3),  # 3 steps do as well as 5
            torch.optim.AdamW([dict(params=[model.embed.weight], lr=embed_lr),
                               dict(params=pairs, lr=pair_lr), dict(params=rest, lr=lr)],
                              betas=(0.9, 0.95), weight_decay=0, fused=device != 'mps')]

def set_learning_rates(run):  # warm up, then decay linearly to zero at max_iters
    warm = min(warmup_iters, max_iters // 2)  # (a short run still reaches its peak rate, and ends at zero)
    factor = min((run.step + 1) / (warm + 1), (max_iters - run.step) / max(1, max_iters - warm))
    groups = [g for opt in run.optimizers for g in opt.param_groups]
    for group, peak in zip(groups, (muon_lr, embed_lr, pair_lr, lr)):  # the rates given now, also when resuming
        group['lr'] = peak * factor

def optimizer_step(model, run, loss):  # backward, and one step of every optimizer
    run.scaler.scale(loss).backward()  # float16 only: the loss scaled up, so that small gradients stay non-zero
    for opt in run.optimizers:
        run.scaler.unscale_(opt)  # and the gradients back down, so that clipping sees the true ones
    norm = nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    if grad_clip:
        nn.utils.clip_grads_with_norm_(model.parameters(), grad_clip, norm)
    # float16: where a gradient overflowed, the scaler would skip only the optimizer that saw it, while clipping
    # has zeroed the others' gradients (and their momentum would still move the weights): all skip this step
    overflowed = run.scaler.is_enabled() and not norm.isfinite()
    for opt in run.optimizers:
        if not overflowed:
            run.scaler.step(opt)
        opt.zero_grad(set_to_none=True)
    run.scaler.update()  # float16: the scale halves after an overflow, and grows again after a long calm

def evaluate(model, run, val_data, amp):  # the val loss, keeping the best model so far (small texts overfit)
    val_loss = split_loss(model, val_data, amp)
    if val_loss < run.best[0]:
        run.best = (val_loss, run.step, {k: v.clone() for k, v in model.state_dict().items()})
    print(f'step {run.step}: val loss {val_loss:.4f} (best {run.best[0]:.4f} at step {run.best[1]})')

def seed_dropout(step):  # dropout's masks: new at every step and in every process, and the same after a resume
    torch.manual_seed(seed + WORLD * step + RANK)  # (seeds the GPU's and the Mac's generators too)

def train(model, run, train_data, val_data, amp):
    net = compiled(model, train_data, amp) if compile else model
    net = DistributedDataParallel(net) if DDP else net
    stop = threading.Event()  # Ctrl-C (or torchrun's SIGTERM) ends the run cleanly at the end of the step
    before = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    last = min(max_iters, run.step + stop_after) if stop_after else max_iters
    clock = (time.time(), run.step)  # for the progress lines: since when, and since which step
    while run.step < last:
        set_learning_rates(run)
        x, y = get_batch(train_data, run.gen)
        seed_dropout(run.step)
        with amp:
            loss = net(x, y)
        optimizer_step(model, run, loss)
        run.step += 1
        logging = run.step % log_interval == 0 or run.step == last
        # reading the loss makes the CPU wait for the GPU, so a lone process reads it only to log it; several
        # processes must agree at every step whether any of them was asked to stop
        if logging or DDP or stop.is_set():
            loss, stopping = agree(loss, stop.is_set()).tolist()
            if not math.isfinite(loss):
                fail(f'the loss became {loss} at step {run.step}; stopped, the last checkpoint is untouched')
            if MASTER and logging:
                clock = log_progress(run.step, last, loss, clock)
            if stopping:
                interrupt(model, run)
        if MASTER and run.step % eval_interval == 0 and run.step < max_iters:
            evaluate(model, run, val_data, amp)
            save_checkpoint(model, run)
            clock = (time.time(), run.step)  # evaluation time is not training time
    for sig, handler in before.items():
        signal.signal(sig, handler)
    if MASTER and run.step < max_iters:  # --stop_after: the run as it stands, to go on from (the best model too)
        save_checkpoint(model, run)
        print(f'stopped at step {run.step} of {max_iters}: saved to {checkpoint}; --resume=True goes on')

def finish(model, run, train_data, val_data, amp):  # the final line reports the best model found, and saves it
    val_loss = split_loss(model, val_data, amp)
    best_val, best_step, best_weights = run.best
    if val_loss > best_val:  # past the turn: the model of the best evaluation is the one to keep
        print(f'val loss {val_loss:.4f} at the end, {best_val:.4f} at step {best_step}: keeping that model')
        model.load_state_dict(best_weights)
        val_loss = best_val
    # the train loss over a stretch as long as the validation split (the whole would take 9x as long)
    train_loss = split_loss(model, train_data[:len(val_data)], amp)
    read = len(eval_windows(val_data)) * block_size
    whole = read >= len(val_data) - block_size
    part = '' if whole else f' (on {read:,} of {len(val_data):,} validation characters, evenly spread)'
    print(f'final: train loss {train_loss:.4f}, val loss {val_loss:.4f}{part}')
    save_checkpoint(model, run)
    print(f'saved {checkpoint}')

# ---------------------------------------------------------------------------------- sampling
def sample(model, chars):
    stoi = {c: i for i, c in enumerate(chars)}
    context = torch.tensor([[stoi[c] for c in prompt or chars[0]]], device=device)  # (1, T)
    # each new character reads every weight: a GPU's are cast once to half precision; a CPU keeps float32, as fast
    # per character and 5x faster over the half windows that generate starts afresh (measured)
    model.eval().to(getattr(torch, 'float32' if device == 'cpu' else dtype))
    return ''.join(chars[i] for i in model.generate(context, num_chars)[0].tolist())

# =============================================================================================================
# Here ends what there is to learn about a GPT. Below is plumbing: settings from the command line, the text and
# its download, checkpoints, precision, torch.compile, several processes, Ctrl-C, and at the very end main(), which
# runs the above in order (read the text, plan, build the model, train, finish, sample). A reader may stop here.
# =============================================================================================================
SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'  # of Tiny Shakespeare

def fail(message):  # bad input of any kind ends here: one line, exit status 2, no traceback
    print(f'error: {message}', file=sys.stderr)
    leave(2)

def leave(status):  # end this process; under torchrun at once, for the reasons given at the end of the file
    if not DDP:
        sys.exit(status)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

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
    problems = [f'{k} must be positive' for k in ('time_budget', 'max_passes', 'eval_chars', 'log_interval')
                if globals()[k] <= 0]
    problems += [f'{k} must be positive, or 0 to choose it' for k in ('n_layer', 'n_head', 'n_embd', 'block_size',
                 'batch_size', 'max_iters', 'eval_interval') if globals()[k] < 0]
    problems += [f'{k} must be between 0 and 1e30' for k in ('stop_after', 'warmup_iters', 'num_chars', 'top_k',
                 'pair_rows', 'temperature', 'grad_clip', 'lr', 'embed_lr', 'pair_lr', 'muon_lr')
                 if not 0 <= globals()[k] < 1e30]
    if n_embd and n_head and (n_embd % n_head or (n_embd // n_head) % 2):
        problems.append(f'n_embd ({n_embd}) must split into n_head ({n_head}) heads of even size')
    if not (0 <= dropout < 1 or dropout == -1) or dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
        problems.append("dropout must be in [0, 1) (or -1) and dtype 'auto', 'float32', 'bfloat16' or 'float16'")
    if not os.path.isdir(os.path.dirname(os.path.abspath(checkpoint))):
        problems.append(f'checkpoint {checkpoint} is in a folder that does not exist')
    if problems:
        fail('; '.join(problems))
    return {arg.removeprefix('--').partition('=')[0] for arg in args}

def check_device():
    try:
        torch.empty(1, device=device)
    except Exception as e:
        fail(f'device {device!r} cannot be used here ({str(e).splitlines()[0]})')
    if torch.device(device).type in ('cpu', 'mps'):  # 'cpu:0' is 'cpu', for every test of the device below
        globals()['device'] = torch.device(device).type
    if device.startswith('cuda:'):  # so that what is asked of "the GPU" (is_bf16_supported...) is asked of this one
        torch.cuda.set_device(device)
    if device.startswith('cuda'):  # float32 matmuls in TF32 on the GPUs that have it (Ampere on): ~8x faster
        torch.set_float32_matmul_precision('high')

def announce(model, chars, precision, why, data):  # the start lines: what runs where, and every setting
    if not MASTER:
        return
    print(f'device {device}, dtype {dtype} ({precision}), {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M '
          f'parameters, vocabulary {len(chars)}, {WORLD} process{"es" if WORLD > 1 else ""}')
    if data is not None:
        n_train = int(0.9 * len(data))
        print(f'model {describe(globals())}: {why}')
        print(f'training {max_iters} steps: {max_iters * batch_size * block_size / n_train:.1f} passes over '
              f'{n_train:,} characters, dropout {dropout}, evaluating every {eval_interval} steps')
    print('settings: ' + ' '.join(f'{k}={globals()[k]!r}' for k in SETTINGS))

def log_progress(step, last, loss, clock):  # one progress line; returns the clock for the next one
    dt = (time.time() - clock[0]) / (step - clock[1])
    print(f'step {step}/{max_iters} | loss {loss:.4f} | {dt * 1000:.0f} ms/step | '
          f'{batch_size * block_size / dt:,.0f} tokens/s | {(last - step) * dt / 60:.1f} min left')
    return time.time(), step

# ---------------------------------------------------------------------------------- the plan's plumbing
def plan_model(vocab_size, n_text, amp, seconds):  # the largest size that trains MIN_STEPS steps in time, and why
    names = ('n_layer', 'n_head', 'n_embd', 'block_size', 'batch_size')
    given = {k: globals()[k] for k in names if globals()[k]}  # a size given is kept as given
    if len(given) == len(names) and max_iters:
        return given, None, 'as given'
    steps = max_iters or MIN_STEPS
    candidates = [{**dict(zip(names, size)), **given} for size in SIZES]
    for size in candidates:  # a batch that the processes can share (under torchrun)
        size['batch_size'] = given.get('batch_size') or -(-size['batch_size'] // WORLD) * WORLD
    chosen, chosen_time, why = None, None, ''
    for size in candidates:
        if size == chosen or not possible(size, n_text):
            continue
        if chosen and not max_iters and max_passes * 0.9 * n_text < steps * size['batch_size'] * size['block_size']:
            why = f'; the text is too small for {describe(size)}: fewer than {steps} steps in {max_passes} passes'
            break  # a text seen too many times is memorised, the more so by a larger model
        guess = chosen_time * work(size) / work(chosen) if chosen else 0  # its step time, by the arithmetic
        if guess * steps > 3 * seconds:  # far too slow: not even worth timing
            why = f'; {describe(size)} would take about {guess * 1000:,.0f} ms a step'
            break
        step_time = first_process_says(time_step(size, vocab_size, amp))  # (so that all processes choose alike)
        if chosen and step_time * steps > seconds:
            why = f'; {describe(size)} would take {step_time * 1000:,.0f} ms a step'
            break
        chosen, chosen_time = size, step_time
    if not chosen:
        fail(f'no model of the sizes gpt.py knows fits what was given ({given}), or the text, or {WORLD} processes')
    return chosen, chosen_time, f'{chosen_time * 1000:,.0f} ms a step here{why}'

def plan_training(n_train, step_time, seconds):  # max_iters, dropout and eval_interval, from the text and the time
    tokens = batch_size * block_size  # per step
    evaluated = min(n_train // 9, eval_chars)  # characters an evaluation reads (the validation split is n_train / 9)
    every = eval_interval or max(1, round(10 * evaluated / tokens))
    steps = max_iters or math.ceil(max_passes * n_train / tokens)
    if not max_iters:  # the steps that fit: an evaluation reads its windows forward only, about a third of a step
        eval_time = evaluated / tokens * step_time / 3 * WORLD  # per batch, in the first process alone, while the
        # others wait; and the end evaluates twice (val and train)
        affordable = max(1, int((seconds - 2 * eval_time) / (step_time + eval_time / every)))
        steps = min(steps, affordable)
    passes = steps * tokens / n_train
    # dropout from how often each character would be seen: 0.1 more each time the passes double from 6 (in steps
    # of 0.1: on a CPU a little dropout costs as much time as a lot, and it must pay for the steps it costs)
    doublings = int(math.log2(max(1, passes / 3)))
    drop = dropout if dropout >= 0 else round(0.1 * min(3, doublings), 1)
    return dict(max_iters=steps, dropout=drop, eval_interval=every)

def plan(vocab_size, n_text, amp):  # what is left to the time, the machine and the text, chosen before training
    def seconds_left():  # of the budget, less 5% for a machine's ups and downs, and torch.compile's time (38 s
        return 0.95 * time_budget - (time.time() - START) - 40 * compile  # measured on this CPU; a GPU's: never)
    size, step_time, why = plan_model(vocab_size, n_text, amp, seconds_left())
    globals().update(size)
    training = plan_training(int(0.9 * n_text), step_time, seconds_left())
    if training['dropout'] and step_time:  # dropout makes a step dearer, a CPU's much dearer: timed again with it
        step_time = first_process_says(time_step(size, vocab_size, amp, training['dropout']))
        training = dict(plan_training(int(0.9 * n_text), step_time, seconds_left()), dropout=training['dropout'])
        why += f'; {step_time * 1000:,.0f} ms with dropout'
    return dict(size, **training), why

def describe(size):
    return (f'{size["n_layer"]} x {size["n_embd"]} ({size["n_head"]} heads) on {size["block_size"]}-character '
            f'windows, batch {size["batch_size"]}')

def possible(size, n_text):  # heads of even size; a batch that the processes share; both splits hold a window
    C, nh = size['n_embd'], size['n_head']
    shared = size['batch_size'] % WORLD == 0
    return C % nh == 0 and C // nh % 2 == 0 and shared and n_text >= 10 * (size['block_size'] + 1)

def work(size):  # multiply-adds of a step, roughly: the blocks' matrices and attention, for every character
    T, C = size['block_size'], size['n_embd']
    return size['batch_size'] * T * size['n_layer'] * (12 * C * C + 2 * T * C)

def time_step(size, vocab_size, amp, drop=0.0):  # seconds a training step of this size takes here, with this dropout
    asked = dropout  # (dropout is then chosen as asked)
    globals().update(size, dropout=drop)
    model = GPT(vocab_size).to(device)
    scaler = torch.amp.GradScaler(device.split(':')[0], enabled=dtype == 'float16')
    run = Run('', make_optimizers(model), scaler, None)
    x = torch.randint(vocab_size, (batch_size // WORLD, block_size), device=device)
    times = []
    try:
        while len(times) < 4 or (sum(times[1:]) < 2 and len(times) < 20):  # the first warms up; then 2 s or so
            start = time.time()
            with amp:
                loss = model(x, x)
            optimizer_step(model, run, loss)
            loss.item()  # waits for the device
            times.append(time.time() - start)
    except torch.OutOfMemoryError:  # too large for this device: as if it took forever
        times = [math.inf] * 4
    globals()['dropout'] = asked  # (the size too is set again: plan sets the one chosen)
    return sum(times[1:]) / (len(times) - 1)

SLICE = 2 ** 22  # characters encoded at once: no Python object per character, and little memory for a large text
def code_points(text, i):  # of text[i:i + SLICE]
    return torch.frombuffer(bytearray(text[i:i + SLICE].encode('utf-32-le')), dtype=torch.int32)


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

def vocabulary(text):  # every distinct character, in order
    counts = sum(torch.bincount(code_points(text, i), minlength=0x110000) for i in range(0, len(text), SLICE))
    return ''.join(map(chr, counts.nonzero().flatten().tolist()))

def encode(text, chars):  # the characters as integers (the lecture's [stoi[c] for c in text]), in the smallest type
    index = torch.zeros(0x110000, dtype=torch.int32)  # code point -> its place in the vocabulary
    index[[ord(c) for c in chars]] = torch.arange(len(chars), dtype=torch.int32)
    small = torch.uint8 if len(chars) <= 256 else torch.int16 if len(chars) <= 2 ** 15 else torch.int32
    data = torch.empty(len(text), dtype=small)  # 1 byte a character for up to 256 distinct ones, not 8
    for i in range(0, len(text), SLICE):
        data[i:i + SLICE] = index[code_points(text, i)]
    return data

def read_data(path, ckpt):  # the text's vocabulary, and the text as integers, checked against what training needs
    if path == SETTINGS['input_file'] and not os.path.exists(path):
        download_tiny_shakespeare(path)
    try:
        text = pathlib.Path(path).read_bytes().decode('utf-8')
    except OSError as e:  # missing, a directory, no permission...
        fail(f'cannot read input file {path}: {e.strerror}; put a text file there or pass --input_file=PATH')
    except UnicodeDecodeError as e:
        fail(f'input file {path} is not valid UTF-8 (bad byte at offset {e.start})')
    needed = 10 * ((block_size or SIZES[0][3]) + 1)  # both splits need at least one window and its next character
    if len(text) < needed:
        fail(f'{path} has {len(text)} characters, fewer than the {needed} needed')
    chars = vocabulary(text)
    unknown = ''.join(sorted(set(chars) - set(ckpt['vocab']))) if ckpt else ''
    if unknown:
        fail(f'{path} has characters that {checkpoint} has never seen: {unknown!r}')
    chars = ckpt['vocab'] if ckpt else chars
    return chars, encode(text, chars)

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
    for k in ('n_layer', 'n_head', 'n_embd', 'block_size', 'pair_rows'):  # (a version without pairs: 0 rows)
        if k in explicit and globals()[k] != ckpt['settings'].get(k, 0):
            fail(f'--{k}={globals()[k]} does not fit {path}, whose model has {k}={ckpt["settings"].get(k, 0)}')
        globals()[k] = ckpt['settings'].get(k, 0)
    for k in ('batch_size', 'max_iters', 'dropout', 'eval_interval'):  # the run goes on as planned, unless told
        if k not in explicit:
            globals()[k] = ckpt['settings'][k]
    return ckpt

def load_weights(model, ckpt):
    try:
        model.load_state_dict(ckpt['model'])
    except RuntimeError:  # other weights' names or shapes: written by another version of this script
        fail(f'{checkpoint} holds weights that do not fit this model (from another version of gpt.py?)')

def start_run(model, chars, ckpt):  # a new run, or the one in the checkpoint: optimizers, step and batches
    scaler = torch.amp.GradScaler(device.split(':')[0], enabled=dtype == 'float16')
    run = Run(chars, make_optimizers(model), scaler, torch.Generator().manual_seed(seed))
    if ckpt:
        for opt, state in zip(run.optimizers, ckpt['optimizers']):
            for saved, now in zip(state['param_groups'], opt.param_groups):  # the settings of now (fused or not
                saved.update({k: v for k, v in now.items() if k != 'params'})  # on this device...), not the saved
            try:
                opt.load_state_dict(state)
            except ValueError:  # other groups of weights: written by another version of this script
                fail(f'{checkpoint} holds optimizer state that does not fit this model (from another version of '
                     f'gpt.py?); it can still be sampled from with --sample_only=True')
        if ckpt['scaler']:  # empty where it was written in another precision: float16 then starts a new scale
            run.scaler.load_state_dict(ckpt['scaler'])
        run.gen.set_state(ckpt['rng'])
        run.step, run.best = ckpt['step'], ckpt['best']
        if run.step > max_iters:
            fail(f'{checkpoint} has trained {run.step} steps already, more than --max_iters={max_iters}')
    return run

def save_checkpoint(model, run):  # never over a good checkpoint with a broken model
    if not all(p.isfinite().all() for p in model.parameters()):
        fail(f'the weights became non-finite by step {run.step}; stopped, {checkpoint} is untouched')
    state = {'script': 'gpt.py', 'model': model.state_dict(), 'vocab': run.vocab, 'step': run.step,
             'settings': {k: globals()[k] for k in SETTINGS}, 'rng': run.gen.get_state(),
             'optimizers': [o.state_dict() for o in run.optimizers],
             'scaler': run.scaler.state_dict(), 'best': run.best}
    write_atomically(checkpoint, lambda f: torch.save(state, f))

# ---------------------------------------------------------------------------------- precision and compilation
def pick_dtype():  # the precision to train in, and why: the start line says both
    if dtype != 'auto':
        return dtype, 'as asked'
    if device.startswith('cuda'):  # T4s, V100s and older cards have no bfloat16: float16 with loss scaling there
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return ('bfloat16', 'native on this GPU') if native else ('float16', 'this GPU has no native bfloat16')
    # A CPU with bfloat16 instructions (AVX-512 BF16, AMX) multiplies 1.6-5x faster in it than in float32; one
    # without (most laptops) emulates it 10-80x slower. Macs have bfloat16 from macOS 14 on, emulated on M1 and M2
    # (reported about half float32's speed). Timing one product each way tells which this is.
    where = 'Mac' if device == 'mps' else 'CPU'
    wait = torch.mps.synchronize if device == 'mps' else lambda: None  # a Mac's products run asynchronously
    def fastest(m):  # of six products (the first one warms up)
        return min(timeit.repeat(lambda: (m @ m, wait()), number=1, repeat=6))
    m = torch.randn(1024, 1024, device=device) if device == 'mps' else torch.randn(256, 256)  # a GPU needs more
    try:
        speedup = fastest(m) / fastest(m.bfloat16())
    except (RuntimeError, TypeError):  # a Mac before macOS 14
        speedup = 0.0
    speedup = first_process_says(speedup)  # (under torchrun every process takes one precision)
    if speedup == 0:
        return 'float32', f'no bfloat16 on this {where}'
    if speedup > 1:
        return 'bfloat16', f'native on this {where}: {speedup:.1f}x float32\'s matmul speed'
    return 'float32', f'bfloat16 is emulated on this {where}: {speedup:.2f}x float32\'s matmul speed'

def muon_in_float32():  # training in float32 or float16 (bfloat16 not native, or not asked for): torch.optim.Muon
    # orthogonalises its updates in bfloat16, which a CPU without it emulates ~15x slower than float32 (measured:
    # 864 ms against 50 ms a step for the 4 x 192 model, half of the whole step), and which a Mac without it cannot
    # run at all. The same iteration in float32:
    torch.optim._muon._zeropower_via_newtonschulz = newton_schulz_float32

def newton_schulz_float32(grad, ns_coefficients, ns_steps, eps):  # as torch.optim.Muon's, in float32
    a, b, c = ns_coefficients
    x = grad.T if grad.size(0) > grad.size(1) else grad  # (the wide way round: the Gram matrix is the smaller)
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if grad.size(0) > grad.size(1) else x

def compiled(model, train_data, amp):  # torch.compile, tried first: it needs Triton (GPU) or a C++ compiler (CPU)
    start = time.time()
    x, y = get_batch(train_data, torch.Generator().manual_seed(seed))  # a batch of the shape training uses
    try:
        net = torch.compile(model)
        with amp:
            loss = net(x, y)
        loss.backward()  # the forward and backward are compiled now, and the first timed step is a plain one
    except Exception as e:
        if MASTER:
            print(f'torch.compile cannot run here ({str(e).strip().splitlines()[0][:120]}); training without it')
        return model
    finally:
        model.zero_grad(set_to_none=True)
    if MASTER:
        print(f'compiled the model in {time.time() - start:.0f} s')
    return net

# ---------------------------------------------------------------------------------- processes and signals
DDP = 'LOCAL_RANK' in os.environ  # under torchrun: one process per device, each taking its share of every batch
RANK, WORLD, MASTER = 0, 1, True  # MASTER: the first process, the only one that prints, evaluates, saves, samples

def start_processes():
    global RANK, WORLD, MASTER
    if DDP and device.startswith('cuda'):  # each process its own GPU, before anything opens GPU 0 in all of them
        globals()['device'] = f'cuda:{os.environ["LOCAL_RANK"]}'
    check_device()
    if not DDP:
        return
    if device == 'mps':  # gloo, the only backend a Mac has, carries no mps tensors; and a Mac has one GPU
        fail('torchrun needs CUDA GPUs (NCCL) or the CPU (gloo, with --device=cpu); on a Mac run python gpt.py')
    if device.startswith('cuda'):
        torch.cuda.set_device(device)
        dist.init_process_group('nccl', device_id=torch.device(device))
    else:
        dist.init_process_group('gloo')
    RANK, WORLD = dist.get_rank(), dist.get_world_size()
    MASTER = RANK == 0

def agree(loss, stop):  # (the mean loss over all processes, > 0 if any asked to stop), on the loss's device:
    status = torch.stack((loss.detach().float(), torch.tensor(float(stop), device=loss.device)))
    if DDP:  # NCCL reduces only GPU tensors, gloo CPU ones
        dist.all_reduce(status)
    return status / WORLD

def everyone_follows(settings):  # the first process's plan, so that every process trains the same model
    return {k: first_process_says(v) for k, v in settings.items()}

def first_process_says(number):  # under torchrun, the first process's number (a timing, a setting) in all
    if DDP:  # (in a tensor: broadcast_object_list needs numpy, which torch does not install)
        value = torch.tensor(float(number), dtype=torch.float64, device=device)
        dist.broadcast(value, src=0)
        number = type(number)(value.item())
    return number

def interrupt(model, run):  # Ctrl-C, or torchrun's SIGTERM, in any process: the first one saves, and all end
    if MASTER:
        save_checkpoint(model, run)
        print(f'interrupted at step {run.step}: checkpoint saved to {checkpoint}')
    end_processes()
    leave(130)

def end_processes():  # the others wait for the first process's evaluation, so that all part together
    if DDP:
        dist.barrier()
        dist.destroy_process_group()

# ---------------------------------------------------------------------------------- the run, start to end
def main():
    explicit = apply_overrides(sys.argv[1:])
    start_processes()  # (and checks the device)
    ckpt = load_checkpoint(checkpoint, explicit) if resume or sample_only else None
    chars, data = (ckpt['vocab'], None) if sample_only else read_data(input_file, ckpt)
    check_prompt(chars)
    globals()['dtype'], precision = pick_dtype()
    if dtype != 'bfloat16':
        muon_in_float32()
    amp = torch.autocast(device.split(':')[0], dtype=getattr(torch, dtype), enabled=dtype != 'float32')
    # what is left to the time, the machine and the text is chosen before the model is built (dropout too)
    settings, why = plan(len(chars), len(data), amp) if data is not None else (dict(dropout=0.0), '')
    globals().update(everyone_follows(settings))
    if batch_size % WORLD:  # (a batch size given, or resumed; one chosen is chosen so)
        fail(f'batch_size ({batch_size}) must divide evenly among {WORLD} processes')
    torch.manual_seed(seed)
    model = GPT(len(chars)).to(device)
    if ckpt:
        load_weights(model, ckpt)
    announce(model, chars, precision, why, data)
    if data is not None:
        train_data, val_data = split_data(data)
        run = start_run(model, chars, ckpt)
        train(model, run, train_data, val_data, amp)
        if MASTER and run.step == max_iters:  # only a run that has ended reports, and keeps, its best model
            finish(model, run, train_data, val_data, amp)
    if MASTER:
        generated = sample(model, chars)
        print(generated)
        if sample_file:
            write_atomically(sample_file, lambda f: f.write(generated.encode('utf-8')))
    end_processes()

if __name__ == '__main__':
    # Under torchrun every process leaves with os._exit (see leave): gloo's threads outlive destroy_process_group
    # (once torch._dynamo is imported, as the optimizers do) and can abort a normal exit; and a process that failed
    # alone (a save that could not be written) must not wait for the others in a collective that never comes
    try:
        main()
    except KeyboardInterrupt:  # outside the training loop there is nothing to save
        leave(130)
    except torch.OutOfMemoryError:  # (a GPU's or a Mac's memory; a CPU's runs into the system's limits instead)
        fail(f'out of memory on {device}: try a smaller model or batch (--n_embd=, --batch_size=)')
    except RuntimeError as e:  # under torchrun, mostly another process gone: gloo then says "Connection closed"
        if not DDP:
            raise
        fail(f'process {RANK} stopped: {str(e).strip().splitlines()[0][:200]}')
    leave(0)
