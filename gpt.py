"""A character-level GPT, trained from scratch on one text file (Tiny Shakespeare unless told so).
    python gpt.py                                      train on input.txt, save gpt.pt, and sample
    python gpt.py --input_file=my_text.txt             train on your own text (any UTF-8 text)
    python gpt.py --sample_only=True --prompt="ROMEO:" sample from gpt.pt without training
In a notebook: paste this file into a cell and run it, or: import gpt; gpt.main(['--max_iters=20'])
"""
import ast, collections, contextlib, copy, csv, dataclasses, functools, io, math, os
import signal, sys, threading, time, timeit, warnings
IMPORTED = time.time()  # run as a program, the budget counts from here
warnings.filterwarnings('ignore', message='Failed to initialize NumPy')  # (gpt.py needs no NumPy)
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

HERE = os.path.dirname(os.path.abspath(globals().get('__file__', 'gpt.py')))  # (notebook: cwd)
# ------------------------ settings, each as --name=value (plan, below the banner, chooses 'auto')
input_file = os.path.join(HERE, 'input.txt')  # the text to train on; fetched if missing
checkpoint = os.path.join(HERE, 'gpt.pt')  # written at evaluations and at the end
log_file = 'auto'       # where do the losses go, as CSV? (auto: the checkpoint's, .csv)
resume = False          # go on training from the checkpoint?
sample_only = False     # only load the checkpoint and generate?
time_budget = 300.0     # how many seconds may the run take, start to sample?
n_layer = 'auto'        # how many transformer blocks?
n_head = 'auto'         # how many attention heads in each block?
n_embd = 'auto'         # how wide is the residual stream?
block_size = 'auto'     # what is the maximum context length for predictions?
batch_size = 'auto'     # how many sequences per step, in each process?
max_iters = 'auto'      # how many optimizer steps? (given: whatever the time; the rate ends at 0)
max_passes = 100.0      # at most how many passes over the training text?
dropout = 'auto'        # what share of activations is dropped in training?
input_noise = 'auto'    # what share of input characters does training replace at random?
eval_interval = 'auto'  # how many steps between evaluations?
patience = 0.2          # how much of the run may bring no better val loss? (0: all)
ema = 0.998             # at most how much of the weights' average (EMA) does a step keep?
eval_chars = 250_000    # at most how many characters does an evaluation read?
stop_after = 0          # stop after this many steps, and save? (0: never)
warmup_iters = 100      # how many steps of linear learning-rate warm-up?
lr = 3e-3               # AdamW's learning rate (the output head)
embed_lr = 0.1          # AdamW's rate for the embedding table
pair_rows = 16384       # how many rows embed each character with the one before?
pair_lr = 0.003         # AdamW's rate for that table (rows seen less often)
muon_lr = 0.02          # Muon's rate (the blocks' weight matrices)
weight_decay = 'auto'   # how much does Muon shrink its matrices a step, times its rate?
grad_clip = 1.0         # clip the gradient norm to this (0: don't)
log_interval = 50       # how many steps between progress lines?
seed = 1337             # seeds the weights, the batches and the sample
device = ('cuda' if torch.cuda.is_available() else  # where to train?
          'mps' if torch.backends.mps.is_available() else 'cpu')
dtype = 'auto'          # the matmuls' precision? (auto: the fastest here)
prompt = ''             # what does the sample continue? ('': the vocabulary's first)
num_chars = 500         # how many characters to generate?
temperature = 1.0       # <1 more conservative, >1 wilder, 0 the likeliest
top_k = 0               # sample among the k likeliest only (0: all)
sample_file = ''        # also write the sample to this file

# ------------------------------------- the model (Config: its shape, the settings of these names)
Config = collections.namedtuple(
    'Config', 'vocab_size n_layer n_head n_embd block_size pair_rows dropout')

def rotate(x, cos, sin):  # rotary positions: channels i and i + hs/2 turned by position
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)

class CausalSelfAttention(nn.Module):
    """Multi-head attention: each position gathers from itself and the positions before it."""
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)  # all heads' q, k and v
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos, sin, cache, p):
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, -1).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        v = qkv[2]
        # QK-norm: each head's queries and keys are normed, so that no update blows up the scores;
        # then turned by position, and back to the values' precision (autocast norms in float32)
        q, k = rotate(norm(qkv[:2]), cos, sin).type_as(v)
        if cache is not None:  # sampling: [] (a new window) or this layer's k, v so far
            if cache:
                k, v = torch.cat((cache[0], k), 2), torch.cat((cache[1], v), 2)
            cache[:] = k, v
        y = attention(q, k, v, p)  # (B, nh, T, hs): the lecture's masked softmax
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C): heads side by side

class SwiGLU(nn.Module):
    """The lecture's feed-forward, SiLU(gate) * value for its ReLU (beat GELU; TUNING.md)."""
    def __init__(self, config):
        super().__init__()
        C, hidden = config.n_embd, 8 * config.n_embd // 3  # (as many weights as C -> 4C -> C)
        self.up, self.down = nn.Linear(C, 2 * hidden, bias=False), nn.Linear(hidden, C, bias=False)

    def forward(self, x):
        gate, value = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * value)

def norm(x):  # LayerNorm without gains or biases (they did not help)
    return F.layer_norm(x, x.shape[-1:])

class Block(nn.Module):
    """Communication (attention), then computation (MLP), each added to the residual stream."""
    def __init__(self, config):
        super().__init__()
        self.attn, self.mlp = CausalSelfAttention(config), SwiGLU(config)

    def forward(self, x, cos, sin, cache, p):  # p: dropout's probability (0 evaluating)
        x = x + drop(self.attn(norm(x), cos, sin, cache, p), p)
        return x + drop(self.mlp(norm(x)), p)

class GPT(nn.Module):
    """Characters in, the next character's logits out: embeddings, the blocks, a norm and a head."""
    def __init__(self, config):
        super().__init__()
        self.config = config
        V, C = config.vocab_size, config.n_embd
        self.embed = nn.Embedding(V, C)
        # a row for each character with the one before it (V: none): what a trigram counts
        rows = min(config.pair_rows, (V + 1) * V)  # (past pair_rows, pairs share rows)
        self.pairs = nn.Embedding(rows, C) if rows else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.head = nn.Linear(C, V, bias=False)
        for name, p in self.named_parameters():  # small weights; branches start near 0
            small = name.endswith(('proj.weight', 'down.weight'))
            nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer) if small else 0.02)

    def forward(self, idx, targets=None, caches=None, start=0, before=None):  # idx (B, T)
        # (a cached step: idx is at position start of its window, after the character before)
        hs = self.config.n_embd // self.config.n_head  # rotary angles (T, hs/2):
        freqs = 10000.0 ** -(torch.arange(0, hs, 2, device=idx.device) / hs)
        angles = torch.arange(start, start + idx.size(1), device=idx.device)[:, None] * freqs
        cos, sin = angles.cos(), angles.sin()
        x = self.embed(idx)  # (B, T, C); positions: rotate, in attention
        if self.pairs:  # the character before each
            V = self.config.vocab_size
            first = torch.full_like(idx[:, :1], V) if before is None else before  # (V: none)
            previous = torch.cat((first, idx[:, :-1]), dim=1)  # (B, T)
            x = x + self.pairs((previous * V + idx) % self.pairs.num_embeddings)
        p = self.config.dropout if self.training else 0.0
        for block, cache in zip(self.blocks, caches or [None] * len(self.blocks)):
            x = block(x, cos, sin, cache, p)
        logits = self.head(norm(x))  # (B, T, vocab)
        if targets is None:  # sampling: the logits; training: the loss alone
            return logits
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    @torch.inference_mode()
    def generate(self, idx, n, temperature=1.0, top_k=0, use_cache=True):  # (1, T) -> (1, T + n)
        # as in training, each character is predicted from at most block_size; a cache cannot
        # slide (its keys above layer 1 hold characters gone), so a full window keeps its last half
        T, caches = self.config.block_size, None
        begin = max(0, idx.size(1) - T)  # where the window starts in idx
        for _ in range(n):
            if idx.size(1) - begin > T:  # full: keep its last half, rounded up
                begin, caches = idx.size(1) - (T + 1) // 2, None
            if caches:  # one new position, added to the cache
                at = idx.size(1) - 1 - begin
                logits = self(idx[:, -1:], caches=caches, start=at, before=idx[:, -2:-1])
            else:  # a new window (use_cache=False: every step)
                caches = [[] for _ in self.blocks] if use_cache else None
                logits = self(idx[:, begin:], caches=caches)
            idx = torch.cat((idx, pick_next(logits[:, -1].float(), temperature, top_k)), dim=1)
        return idx

def pick_next(logits, temperature, top_k):  # (B, vocab) -> (B, 1)
    if temperature < torch.finfo(logits.dtype).tiny:  # 0, or as good as 0
        return logits.argmax(-1, keepdim=True)
    logits = (logits - logits.max(-1, keepdim=True).values) / temperature  # (max 0: no overflow)
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    return torch.multinomial(F.softmax(logits, dim=-1), 1)

# ---------- the data (below the banner: read_data, the text as integers; pass_starts, their order)
def windows(data, starts):  # (B, T) and what follows each
    xy = data[to_device(starts[:, None] + torch.arange(block_size + 1))].long()  # (B, T + 1)
    return xy[:, :-1], xy[:, 1:]

def get_batch(data, step):  # every window once a pass, shuffled; each process its share
    n = (len(data) - 1) // block_size - 1  # windows in a pass, end to end from its offset
    draws = step * batch_size * WORLD + torch.arange(batch_size * WORLD)  # (every process's)
    starts = [pass_starts(i // n, n, seed, block_size)[i % n] for i in draws.tolist()]
    return windows(data, torch.stack(starts[RANK::WORLD]))

def eval_windows(data):  # the split's windows' starts
    n = (len(data) - 1) // block_size
    read = max(1, min(n, eval_chars // block_size))
    return torch.linspace(0, n - 1, read).round().long() * block_size

@torch.no_grad()
def split_loss(model, data):  # the lecture's estimate_loss, on fixed windows
    starts = eval_windows(data)  # end to end, or eval_chars' worth evenly spread
    # each process its share (maybe none), in training's batches (they stay in a CPU's cache)
    batches = starts[RANK::WORLD].split(batch_size)
    model.eval()
    with autocast(dtype):
        total = sum(model(*windows(data, batch)) * len(batch) for batch in batches if len(batch))
    model.train()
    loss = shared(float(total), add=True) / len(starts)  # (float: the one wait for the device)
    need(math.isfinite(loss), f'the loss became {loss} in an evaluation; stopped, the last '
         'checkpoint is untouched')
    return loss

# ----------------------------- training (a run's state, Run, and its end, finish: below the banner)
def make_optimizers(model, precision, decay):  # Muon: the blocks' matrices; AdamW: the tables, head
    pairs = [model.pairs.weight] if model.pairs else []
    groups = [dict(params=[model.embed.weight], lr=embed_lr), dict(params=pairs, lr=pair_lr),
              dict(params=[model.head.weight], lr=lr)]
    scaler = torch.amp.GradScaler(device.split(':')[0], enabled=precision == 'float16')
    return [Muon(model.blocks.parameters(), muon_lr, decay, getattr(torch, precision)),
            torch.optim.AdamW(groups, betas=(0.9, 0.95), weight_decay=0)], scaler

def set_learning_rates(run):  # warm up, then down to 0 at the end
    warm = min(warmup_iters, run.steps // 2)  # (a short run still peaks)
    factor = min((run.step + 1) / (warm + 1), (run.steps - run.step) / max(1, run.steps - warm))
    groups = [g for opt in run.optimizers for g in opt.param_groups]
    for group, peak in zip(groups, (muon_lr, embed_lr, pair_lr, lr)):
        group['lr'] = peak * factor

def optimizer_step(model, run, loss):  # backward, and every optimizer steps
    run.scaler.scale(loss).backward()  # (float16: scaled up, then down to clip)
    for opt in run.optimizers:
        run.scaler.unscale_(opt)
    total = nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    overflowed = run.scaler.is_enabled() and not total.isfinite()  # (float16: all skip)
    for opt in run.optimizers:
        if not overflowed:
            run.scaler.step(opt)
        opt.zero_grad(set_to_none=True)
    run.scaler.update()  # (float16: halves after an overflow)

@torch.no_grad()
def update_average(run, model):  # a smoother model: the one evaluated
    keep = min(ema, (1 + run.step) / (10 + run.step))  # (about the last tenth of the steps)
    for mean, p in zip(run.average.parameters(), model.parameters()):
        mean.lerp_(p, 1 - keep)

def evaluate(run, val_data):  # keeps the best; ends a run with nothing to gain
    loss = split_loss(run.average, val_data)
    if loss < run.best[0]:
        run.best = (loss, run.step, copy.deepcopy(run.average.state_dict()))
    say(f'step {run.step}: val loss {loss:.4f} (best {run.best[0]:.4f} at step {run.best[1]})')
    log_row(run, val_loss=loss, best_val_loss=run.best[0])
    # not better now, and the next evaluation (or the end) would be too long past the best?
    waited = min(run.step + eval_interval, run.steps) - run.best[1]
    if patience and run.best[1] < run.step and waited > patience * run.steps:
        say(f'step {run.step}: no better val loss in {run.step - run.best[1]} steps: ending here')
        run.steps = run.step

def train(model, run, train_data, val_data):
    net = DistributedDataParallel(model) if DDP else model  # (torchrun: gradients averaged)
    run.ticked = time.time(), run.step
    with stop_signals() as stop:  # Ctrl-C ends the run after a step
        while run.step < run.end:
            set_learning_rates(run)
            x, y = get_batch(train_data, run.step)
            seed_dropout(run.step)  # (and the characters replaced)
            if input_noise:  # a text seen many times: harder to learn by heart (TUNING.md)
                replaced = torch.rand(x.shape, device=x.device) < input_noise
                x = torch.where(replaced, torch.randint_like(x, len(run.vocab)), x)
            with autocast(dtype):
                loss = net(x, y)
            optimizer_step(model, run, loss)
            run.step += 1
            update_average(run, model)
            # the rest is diagnostics, in every process: progress lines, stopping, evaluations
            stopping = check_in(run, loss, stop)  # (and refits the steps to the time)
            if run.step % eval_interval == 0 and run.step < run.steps:
                evaluate(run, val_data)
                save_checkpoint(model, run, unless_within=60)  # (a save takes seconds)
                run.ticked = time.time(), run.step  # (evaluating is not training)
            if stopping and run.step < run.end:  # (in the call's last step: it ends as planned)
                interrupt(model, run)  # saved (after an evaluation due here); every process ends

# ---------------------------------------- sampling, and main (encode, the lecture's stoi: below)
def sample(model, chars, prompt='', n=500, temperature=1.0, top_k=0):  # the prompt and n more
    where = next(model.parameters()).device
    context = torch.tensor([encode(chars, prompt or chars[0])], device=where)  # (1, T)
    return ''.join(chars[i] for i in model.generate(context, n, temperature, top_k)[0].tolist())

def main(args=None):  # args as on the command line; None: sys.argv
    with settings_kept(), errors_in_one_line():  # (a notebook may call again)
        started = start(args)  # settings, output, device, processes
        ckpt = read_checkpoint(checkpoint) if resume or sample_only else None
        chars, data = (ckpt['vocab'], None) if sample_only else read_data(input_file, ckpt)
        encode(chars, prompt)  # (a prompt it cannot encode fails now, not after training)
        choices, why = plan(len(chars), data, ckpt, started)
        globals().update(choices)  # every 'auto' setting chosen: read-only now
        torch.manual_seed(seed)
        model = GPT(config(globals(), len(chars))).to(device)
        if ckpt:  # resume: the last weights; sample: the run's (stopped early: best)
            weights, note = best_weights(ckpt) if sample_only else (ckpt['model'], '')
            load_weights(model, weights, checkpoint)
            say(note)
        announce(model, chars, why, data)
        if data is not None:
            n = int(0.9 * len(data))  # 90% to train on, the rest to validate
            train_data, val_data = data[:n].to(device), data[n:].to(device)
            run = start_run(model, chars, ckpt, why['refit'])
            train(model, run, train_data, val_data)
            with stop_signals():  # (Ctrl-C waits for the end's evaluations and save)
                finish(model, run, train_data, val_data)  # (--stop_after: saved only)
        if RANK == 0:  # (show: also to sample_file)
            show(sample(model.eval(), chars, prompt, num_chars, temperature, top_k))
        end_processes()

# ==================================================================================================
# Here ends what there is to learn about a GPT. Below is plumbing: what runs faster on which
# hardware, the plan, the command line, the text, checkpoints, several processes. Why each piece
# is as it is, with its measurements: TUNING.md.
# ==================================================================================================
# -------------------------------------------------------------------------- faster on some hardware
def attention(q, k, v, dropout_p):  # q (B, nh, T, hs), k and v (B, nh, S, hs)
    T, S = q.size(-2), k.size(-2)
    if not q.is_cpu:  # a GPU's or a Mac's fused kernel (one new query: every cached key)
        return F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, dropout_p=dropout_p)
    # a CPU: the lecture's form, a faster step than the fused kernel's in bfloat16 (1.4x) and with
    # dropout (1.15x), as fast otherwise (TUNING.md). Scores (B, nh, T, S), scaled as q (smaller);
    # -inf on the keys after each query's own, added (an addition's backward costs nothing)
    future = q.new_full((T, S), float('-inf')).triu(S - T + 1)
    scores = (q * q.size(-1) ** -0.5) @ k.transpose(-2, -1) + future
    return drop(scores.softmax(dim=-1), dropout_p) @ v

def drop(x, p):  # zeroed with probability p, the rest scaled up
    if p == 0:
        return x
    if x.is_cpu:  # 8-bit draws, p rounded to 256ths: 3-5x F.dropout
        p, n = min(round(256 * p), 255) / 256, x.numel()
        draws = torch.randint(-2 ** 63, 2 ** 63 - 1, (n // 8 + 1,))
        draws = draws.view(torch.int8)[:n].view(x.shape)
        kept = draws >= 256 * p - 128
    else:
        kept = torch.rand(x.shape, device=x.device) >= p
    return x * (kept.to(x.dtype) / (1 - p))  # (as large on average)

def autocast(precision):  # the matmuls in this precision
    kind = torch.device(device).type
    return torch.autocast(kind, getattr(torch, precision), enabled=precision != 'float32')

def pick_dtype():  # the precision to train in, and why
    if dtype != 'auto':
        return dtype, 'as asked'
    if device.startswith('cuda'):  # T4s, V100s: float16, loss scaled
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return 'bfloat16', 'native on this GPU'
        return 'float16', 'this GPU has no native bfloat16'
    # a CPU or a Mac with bfloat16 multiplies 1.6-5x faster in it, one without 10-80x slower
    where = 'Mac' if device == 'mps' else 'CPU'
    m = torch.randn((1024, 1024) if device == 'mps' else (256, 256), device=device)
    def fastest(m):  # of six (a Mac's run asynchronously)
        wait = getattr(torch, device).synchronize  # (torch.cpu's does nothing)
        return min(timeit.repeat(lambda: (m @ m, wait()), number=1, repeat=6))
    try:
        speedup = fastest(m) / fastest(m.bfloat16())
    except (RuntimeError, TypeError):  # a Mac before macOS 14
        speedup = 0.0
    speedup = shared(speedup)  # (every process takes one precision)
    if speedup == 0:
        return 'float32', f'no bfloat16 on this {where}'
    speed = f"{speedup:.2g}x float32's matmul speed"
    if speedup > 1:
        return 'bfloat16', f'native on this {where}: {speed}'
    return 'float32', f'bfloat16 is emulated on this {where}: {speed}'

class Muon(torch.optim.Optimizer):
    """torch.optim.Muon's step (momentum, then each matrix's update orthogonalised), with the
    matrices of one shape orthogonalised together (torch's: one at a time, ~20 launches each), in
    the precision training runs in: torch's always runs bfloat16, which a CPU without it emulates
    ~15x slower (864 against 50 ms a step at 4 x 192) and a Mac without it cannot run."""
    def __init__(self, params, lr, decay, precision):
        super().__init__(params, dict(lr=lr, momentum=0.95, weight_decay=decay))
        self.precision = precision

    @torch.no_grad()
    def step(self):
        a, b, c = 3.4445, -4.7750, 2.0315  # torch's coefficients
        group, = self.param_groups  # (one: the blocks' matrices)
        shapes, m = {}, group['momentum']
        for p in group['params']:
            shapes.setdefault(p.shape, []).append(p)
        for (rows, cols), ps in shapes.items():
            bufs = [self.state[p].setdefault('momentum_buffer', torch.zeros_like(p)) for p in ps]
            for p, buf in zip(ps, bufs):
                buf.lerp_(p.grad, 1 - m)
            x = torch.stack([p.grad.lerp(buf, m) for p, buf in zip(ps, bufs)])  # (Nesterov's)
            x = (x.mT if rows > cols else x).to(self.precision)  # (n, wide)
            x = x / x.norm(dim=(1, 2), keepdim=True).clamp(min=1e-7)
            for _ in range(3):
                gram = x @ x.mT
                poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
                x = torch.baddbmm(x, poly, x, beta=a)
            for p, update in zip(ps, x.mT if rows > cols else x):
                p.mul_(1 - group['lr'] * group['weight_decay'])
                p.add_(update, alpha=-group['lr'] * math.sqrt(max(1, rows / cols)))

def to_device(t):  # a copy the host does not wait for
    if device.startswith('cuda'):
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)

# -------------------------------------------------------------------- the plan: how large, how long
SIZES = [  # smallest first
    (3, 4, 128, 128, 24),  # a small text (a longer window learns it by heart)
    (3, 4, 128, 256, 12),  # a laptop's CPU without bfloat16
    (4, 4, 192, 256, 12),  # a faster laptop; bfloat16 on a smaller text
    (5, 4, 256, 256, 12),  # two CPU cores with bfloat16
    (6, 4, 256, 512, 6),  # the same in ten minutes; a fast CPU, a Mac
    (6, 6, 384, 256, 64)]  # a GPU: the lecture's size
SIZE_NAMES = ('n_layer', 'n_head', 'n_embd', 'block_size', 'batch_size')
SHAPE_NAMES = SIZE_NAMES[:4] + ('pair_rows',)  # a checkpoint's model
# what a resumed run keeps
RUN_NAMES = ('batch_size', 'max_iters', 'dropout', 'input_noise', 'weight_decay', 'eval_interval')
MIN_STEPS = 1000  # with fewer steps, a smaller model wins
MIN_READ = 0.9  # with fewer characters read per weight of its blocks, a smaller model wins
MAX_PARAMS = 14  # with more parameters per training character, a smaller model wins

def plan(vocab_size, data, ckpt, started):  # every auto setting, and why
    # the model's size and the run's length follow the time given, the machine and the text;
    # a resumed run goes on as it was planned (its checkpoint holds the plan)
    given = {k: globals()[k] for k in SIZE_NAMES + RUN_NAMES if globals()[k] != 'auto'}
    if ckpt:
        saved = ckpt['settings']
        for k in SHAPE_NAMES:  # the model's shape is the checkpoint's
            now = globals()[k]
            need(now in (saved[k], SETTINGS[k]),  # (or left as it is)
                 f'--{k}={now} does not fit {checkpoint}, whose model has {k}={saved[k]}')
            given[k] = saved[k]
        given = {k: saved[k] for k in RUN_NAMES} | given
    precision, why_precision = pick_dtype()
    chosen = given | dict(dtype=precision, log_file=log_path())
    if data is None:  # sampling only
        return chosen | dict(dropout=0.0), dict(precision=why_precision)
    deadline = started + 0.95 * time_budget
    def seconds_left():  # (the first process's: all plan alike)
        return shared(deadline - time.time())
    n_train = int(0.9 * len(data))
    size, step_time, why = plan_model(vocab_size, len(data), given, precision, seconds_left())
    # (a step with dropout is dearer: the steps are refitted as the run goes, see refit)
    training = plan_training(n_train, size, given, step_time, seconds_left(), vocab_size)
    chosen |= size | training  # (alike in every process)
    refit = None if 'max_iters' in given else dict(  # (resumed: given)
        planned=step_time, n_train=n_train, deadline=deadline, seconds=0.0, steps=0, refitted=False)
    return chosen, dict(precision=why_precision, model=why, refit=refit)

def plan_model(vocab_size, n_text, given, precision, seconds):  # a size, its step time, why
    # the largest size that trains MIN_STEPS steps in time; a size given is kept
    fixed = {k: given[k] for k in SIZE_NAMES if k in given}
    if len(fixed) == len(SIZE_NAMES) and 'max_iters' in given:
        return fixed, None, 'as given'
    chosen, chosen_time, why = None, None, ''
    n_train = int(0.9 * n_text)
    room = max_passes * n_train
    for size in [dict(zip(SIZE_NAMES, size)) | fixed for size in SIZES]:
        if room < MIN_STEPS * chars_a_step(size) and 'batch_size' not in fixed:
            size['batch_size'] = -(-size['batch_size'] // WORLD)  # a small text: a share each
        C, nh, T = size['n_embd'], size['n_head'], size['block_size']
        if size == chosen or C % nh or C // nh % 2 or n_text < 10 * (T + 1):
            continue  # (heads of even size; a window in each split)
        # a larger model learns a text by heart sooner: one seen too many times, or small for it
        if chosen and (room < MIN_STEPS * chars_a_step(size) or
                       parameters(size, vocab_size) > MAX_PARAMS * n_train):
            why = f'; the text is too small for {describe(size)}'
            break
        # far too slow by the arithmetic: not even worth timing
        guess = chosen_time * work(size) / work(chosen) if chosen else 0
        if chosen and guess * MIN_STEPS > 3 * seconds:
            why = f'; {describe(size)} would take about {guess * 1000:,.0f} ms a step'
            break
        step_time = time_step(size, vocab_size, precision)
        if step_time == math.inf:  # out of memory here: the size before it, if any
            if not chosen:
                raise torch.OutOfMemoryError()
            why = f'; {describe(size)} runs out of memory here'
            break
        tokens = chars_a_step(size)  # (and the evaluations in the time)
        steps = max(MIN_STEPS, MIN_READ * parameters(size, vocab_size, 'blocks') / tokens)
        every = given.get('eval_interval') or evaluation_interval(n_train, tokens)
        if chosen and steps_that_fit(n_train, tokens, step_time, seconds, every) < steps:
            why = f'; {describe(size)} would take {steps:,.0f} steps of {step_time * 1000:,.0f} ms'
            break
        chosen, chosen_time = size, step_time
    need(chosen, f'no model of the sizes gpt.py knows fits what was given ({fixed}; with '
         'n_embd, give an n_head that splits it into heads of even size), or the text, or '
         f'{WORLD} processes')
    return chosen, chosen_time, f'{chosen_time * 1000:,.0f} ms a step here{why}'

def plan_training(n_train, size, given, step_time, seconds, vocab_size):
    tokens = chars_a_step(size)
    every = given.get('eval_interval') or evaluation_interval(n_train, tokens)
    steps = given.get('max_iters') or min(  # (given: more than 0)
        math.ceil(max_passes * n_train / tokens),
        steps_that_fit(n_train, tokens, step_time, seconds, every))
    need(steps, f'the time budget ({time_budget:g} s) is spent before training could start '
         '(and end); give more with --time_budget=')
    # more of each as the model could learn the text by heart, up to 0.3: weight decay 0.1 a
    # doubling of the passes from one pass; dropout 0.1 a doubling of the passes times the
    # parameters per training character from 64, in tenths (a little costs a CPU as much as more);
    # from there on, 5% of the input characters replaced
    passes = steps * tokens / n_train
    by_heart = passes * parameters(size, vocab_size) / n_train / 64
    decay = given.get('weight_decay', round(min(0.3, 0.1 * math.log2(max(1, passes))), 2))
    drop = given.get('dropout', round(min(0.3, 0.1 * math.log2(max(1, by_heart))), 1))
    noise = given.get('input_noise', 0.05 if by_heart >= 1 else 0.0)
    return dict(max_iters=steps, dropout=drop, input_noise=noise, weight_decay=decay,
                eval_interval=every)

def evaluation_interval(n_train, tokens):  # ten times what an evaluation reads is trained between
    return max(1, round(10 * min(n_train // 9, eval_chars) / tokens))

def steps_that_fit(n_train, tokens, step_time, seconds, every):  # in these seconds
    # an evaluation reads forward only, about a third of a step a batch, each process its share;
    # the end evaluates three times (val twice, and train)
    eval_time = min(n_train // 9, eval_chars) / tokens * step_time / 3
    return max(0, int((seconds - 3 * eval_time) / (step_time + eval_time / every)))

def refit(run, step_time, steps):  # the steps that fit, as the run goes
    # the plan timed a plain step in the machine's first seconds; training runs with dropout,
    # under DDP, on the text, and a machine's speed drifts
    fit = run.refit
    fit['seconds'] += step_time * steps
    fit['steps'] += steps
    mean = shared(fit['seconds'] / fit['steps'])  # since warm-up
    tokens, seconds = chars_a_step(), fit['deadline'] - time.time()
    left = steps_that_fit(fit['n_train'], tokens, mean, seconds, eval_interval)
    cap = math.ceil(max_passes * fit['n_train'] / tokens)  # as the plan's
    total = shared(max(run.step, min(run.step + left, cap)))  # (no time left: ends now)
    if fit['refitted'] and abs(total - run.steps) <= 0.02 * run.steps:
        return
    fit['refitted'] = True
    say(f'step {run.step}: {mean * 1000:,.0f} ms a step as it runs '
        f'({fit["planned"] * 1000:,.0f} planned): {total:,} steps in all, '
        'to end within the time budget')
    run.steps = total

def chars_a_step(size=None):  # characters a step reads, all processes
    size = size or globals()
    return size['batch_size'] * size['block_size'] * WORLD

def describe(size):
    return (f'{size["n_layer"]} x {size["n_embd"]} ({size["n_head"]} heads) on '
            f'{size["block_size"]}-character windows, batch {size["batch_size"]}')

def work(size):  # multiply-adds of a step, roughly
    T, C = size['block_size'], size['n_embd']
    return size['batch_size'] * T * size['n_layer'] * (12 * C * C + 2 * T * C)

def config(settings, vocab_size):  # from settings, a size or a checkpoint's
    return Config(vocab_size, *(settings[k] for k in Config._fields[1:]))

def untrained(size, vocab_size):  # as the plan times a size, or load() a checkpoint's shape
    return GPT(config({'pair_rows': pair_rows, **size, 'dropout': 0.0}, vocab_size))

def parameters(size, vocab_size, part=''):  # counted, not made: the model's, or a part's
    with torch.device('meta'):
        model = untrained(size, vocab_size)
    return sum(p.numel() for p in model.get_submodule(part).parameters())

def time_step(size, vocab_size, precision):  # a step's seconds, here
    # (under torchrun in every process, as DDP's collectives need: the first process's figure)
    model = untrained(size, vocab_size).to(device)
    net = DistributedDataParallel(model) if DDP else model
    run = Run('', *make_optimizers(model, precision, 0.0))
    B, T = size['batch_size'], size['block_size']
    x, y = torch.randint(vocab_size, (2, B, T), device=device)
    times = []
    try:  # the first warms up; then 2 s (torchrun: 8 steps)
        while len(times) < 4 + 4 * DDP or not DDP and sum(times[1:]) < 2 and len(times) < 20:
            start = time.time()
            with autocast(precision):
                loss = net(x, y)
            optimizer_step(model, run, loss)
            loss.item()  # waits for the device
            times.append(time.time() - start)
    except RuntimeError as e:  # too large here: as if it took forever
        if not out_of_memory(e):
            raise
        times = [math.inf] * 4
    return shared(sum(times[1:]) / (len(times) - 1))

# ----------------------------------------------------------------------- settings, start-up, output
# Tiny Shakespeare, fetched where input_file is left as it is and missing
URL = ('https://raw.githubusercontent.com/karpathy/char-rnn/master/data/'
       'tinyshakespeare/input.txt')
SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'

def current(names):
    return {k: globals()[k] for k in names}

# the settings by name (a notebook's names from before the paste keep their places in globals())
SETTINGS = current('''input_file checkpoint log_file resume sample_only time_budget n_layer n_head
    n_embd block_size batch_size max_iters max_passes dropout input_noise eval_interval patience
    ema eval_chars stop_after warmup_iters lr embed_lr pair_rows pair_lr muon_lr weight_decay
    grad_clip log_interval seed device dtype prompt num_chars temperature top_k
    sample_file'''.split())
# the types of the settings the plan chooses, where given
CHOSEN = dict.fromkeys(SIZE_NAMES + RUN_NAMES, int) | dict.fromkeys(
    ('dropout', 'input_noise', 'weight_decay'), float)
POSITIVE = ('time_budget', 'max_passes', 'eval_chars', 'log_interval', 'max_iters',
            'eval_interval', *SIZE_NAMES)
# upper bounds (the rest: from 0 to below 1e30)
BELOW = dict(dropout=1, input_noise=1, ema=1, patience=1, seed=2 ** 63)

class Bad(ValueError):
    """Bad input, or what this machine cannot do: one line and exit status 2."""

def need(ok, message):
    if not ok:
        raise Bad(message)

def start(args):  # settings, budget, output, device
    # the command line is read only where this file is the program run (not in a notebook's
    # kernel, whose arguments are its own, nor when imported); given args, the budget starts
    program = os.path.abspath(sys.argv[0]) == os.path.abspath(globals().get('__file__', '-'))
    started = IMPORTED if args is None and program else time.time()
    args = sys.argv[1:] if args is None and program else list(args or [])
    for stream in (sys.stdout, sys.stderr):  # each line out when printed, and
        if hasattr(stream, 'reconfigure'):  # what a console cannot show escaped
            stream.reconfigure(line_buffering=True, errors='backslashreplace')
    need(torch.__version__ >= (2, 9), f'gpt.py needs torch 2.9 or later, and this is '
         f'torch {torch.__version__}: pip install --upgrade "torch>=2.9"')
    apply_overrides(args)
    start_processes()  # (and checks the device)
    return started

def say(*lines):  # print from the first process (if anything)
    if RANK == 0 and any(lines):
        print(*lines, sep='\n')

def show(text):  # printed, and in sample_file (in UTF-8)
    print(text)
    if sample_file:
        write_atomically(sample_file, lambda f: f.write(text.encode('utf-8')))

def first_line(e):  # or its name, where it has none
    return (str(e).strip().splitlines() or [type(e).__name__])[0]

def leave(status):  # under torchrun at once (see the end)
    if not DDP:  # (an exit chained to the error: old IPython, as Colab's, prints a wall of its own)
        raise SystemExit(status) from None
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

@contextlib.contextmanager
def errors_in_one_line():  # one line, exit status 2
    try:
        yield
    except KeyboardInterrupt:  # outside training: nothing to save
        leave(130)
    except BrokenPipeError:  # (python gpt.py | head): quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        leave(1)
    except (Bad, FileNotFoundError, RuntimeError) as e:
        message = first_line(e)
        if out_of_memory(e):
            message = (f'out of memory on {device}: try a smaller model or batch '
                       '(--n_embd=, --batch_size=)')
        elif isinstance(e, RuntimeError):  # torchrun: mostly another process gone
            if not DDP:
                raise
            message = f'process {RANK} stopped: {message[:200]}'
        print(f'error: {message}', file=sys.stderr)
        leave(2)

def out_of_memory(e):  # in torch's words: a GPU's, a Mac's (a RuntimeError), a CPU's
    return isinstance(e, torch.OutOfMemoryError) or any(words in str(e) for words in (
        'out of memory', "can't allocate memory", 'size calculation overflowed'))

def apply_overrides(args):  # --name=value, value a Python literal
    valid = 'valid settings: ' + ', '.join(SETTINGS)
    for arg in args:
        name, eq, text = arg.removeprefix('--').partition('=')
        need(arg.startswith('--') and eq and name in SETTINGS,
             f'{arg!r} is not --name=value for a known name; {valid}')
        default = SETTINGS[name]
        kind = CHOSEN.get(name, type(default))
        try:  # ('auto' reads as text)
            value = text if kind is str else ast.literal_eval(text)
        except Exception:  # (also what Python cannot even read, as {[1]})
            value = text
        value = float(value) if kind is float and type(value) is int else value
        need(type(value) is kind or value == default == 'auto',
             f'--{name} must be of type {kind.__name__}, not {text!r}; {valid}')
        need(type(value) is not float or math.isfinite(value),  # (1e400 reads as inf)
             f'--{name} must be a finite number, not {text!r}')
        globals()[name] = value
    numbers = {k: globals()[k] for k in SETTINGS if type(globals()[k]) in (int, float)}
    problems = [f'{k} must be positive' for k in POSITIVE if numbers.get(k, 1) <= 0]
    problems += [f'{k} must be in [0, {BELOW.get(k, 1e30)})' for k, v in numbers.items()
                 if k not in POSITIVE and not 0 <= v < BELOW.get(k, 1e30)]
    if 'n_embd' in numbers and numbers.get('n_head') and (n_embd % n_head or n_embd // n_head % 2):
        problems.append(f'n_embd ({n_embd}) must split into n_head ({n_head}) heads of even size')
    if dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
        problems.append("dtype must be 'auto', 'float32', 'bfloat16' or 'float16'")
    written = ('sample_file',) if sample_only else ('checkpoint', 'log_file', 'sample_file')
    problems += filter(None, map(path_problem, written))
    need(not problems, '; '.join(problems))

def log_path():  # 'auto': beside the checkpoint
    return os.path.splitext(checkpoint)[0] + '.csv' if log_file == 'auto' else log_file

def path_problem(name):  # what is wrong with where it goes
    files = dict(input_file=input_file, checkpoint=checkpoint, log_file=log_path(),
                 sample_file=sample_file)
    path = files[name]
    if not path and name != 'checkpoint':  # (none)
        return ''
    folder = os.path.dirname(os.path.abspath(path))
    # the first of the files with this path: itself, or one before it (each pair once)
    first = next(k for k in files if os.path.abspath(files[k]) == os.path.abspath(path))
    return next((problem for bad, problem in [
        (not path, f"{name} is empty: it needs a file's path"),
        (os.path.isdir(path), f'{name} {path} is a folder, not a file'),
        (not os.path.isdir(folder), f'{name} {path} is in a folder that does not exist'),
        (not os.access(folder, os.W_OK),  # (a read-only disk)
         f'{name} {path} is in a folder that cannot be written to'),
        (first != name, f'{name} {path} is also the {first}, which writing it would lose')]
        if bad), '')

def announce(model, chars, why, data):  # the start lines
    params = sum(p.numel() for p in model.parameters()) / 1e6
    say(f'device {device}, dtype {dtype} ({why["precision"]}), {params:.2f}M parameters, '
        f'vocabulary {len(chars)}, {WORLD} process{"es" * (WORLD > 1)}')
    if data is not None:
        n_train = int(0.9 * len(data))
        passes = max_iters * chars_a_step() / n_train
        most = ' (max_passes: more would only memorise it)' * (passes > max_passes - 0.5)
        say(f'model {describe(globals())}: {why["model"]}',
            f'training {max_iters} steps: {passes:.1f} passes over {n_train:,} characters'
            f'{most}, dropout {dropout}, input noise {input_noise}, weight decay {weight_decay}, '
            f'evaluating every {eval_interval} steps')
    say('settings: ' + ' '.join(f'{k}={globals()[k]!r}' for k in SETTINGS))

def check_in(run, loss, stop):  # True: all stop (Ctrl-C or SIGTERM, as every process agrees)
    # reading the loss makes the host wait for a GPU: only to log it; under torchrun every
    # process checks in at the same steps (collectives), GPUs' at progress lines, CPUs' at every
    # step (torchrun kills them 30 s after Ctrl-C), and Ctrl-C ends all at the next check
    progress = run.step % log_interval == 0 or run.step == run.steps
    if not progress and (device != 'cpu' if DDP else not stop.is_set()):  # (alone: at once)
        return False
    loss, stopping = shared(loss.item(), add=True) / WORLD, shared(stop.is_set(), add=True)
    need(math.isfinite(loss), f'the loss became {loss} at step {run.step}; stopped, '
         'the last checkpoint is untouched')
    if progress:
        then, since = run.ticked
        step_time = (time.time() - then) / (run.step - since)
        say(f'step {run.step}/{run.steps} | loss {loss:.4f} | '
            f'{step_time * 1000:.0f} ms/step | '
            f'{chars_a_step() / step_time:,.0f} tokens/s | '
            f'{(run.end - run.step) * step_time / 60:.1f} min left')
        log_row(run, train_loss=loss)
        # refitted after warm-up, not at its end: more steps there would raise a rate come down
        if run.refit and min(warmup_iters, max_iters // 2) <= run.step < run.end:
            refit(run, step_time, run.step - since)
        run.ticked = time.time(), run.step
    return stopping

@contextlib.contextmanager
def settings_kept():  # main's choices end with it
    before = current(SETTINGS)
    try:
        yield
    finally:
        globals().update(before)

@contextlib.contextmanager
def stop_signals():  # set by Ctrl-C or SIGTERM
    stop = threading.Event()
    main_thread = threading.current_thread() is threading.main_thread()  # (else an app's)
    signals = (signal.SIGINT, signal.SIGTERM) if main_thread else ()
    before = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)

# ----------------------------------------------------------------------------------------- the text
def write_atomically(path, write):  # a crash leaves the old file whole
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # (torch.save: a full disk)
        why = getattr(e, 'strerror', None) or first_line(e)
        raise Bad(f'cannot write {path}: {why}') from e
    finally:  # (Ctrl-C too)
        with contextlib.suppress(OSError):  # (renamed, or never made: none)
            os.remove(tmp)

def read_data(path, ckpt):  # the vocabulary, and the text as integers
    if path == SETTINGS['input_file'] and not os.path.exists(path):
        try:  # to a temporary file, checked, renamed
            torch.hub.download_url_to_file(URL, path, SHA256, progress=False)
        except (OSError, RuntimeError) as e:  # (no network, another file)
            raise Bad(f'{path} is missing, downloading {URL} failed ({first_line(e)}); put '
                      'a text file there or pass --input_file=PATH') from e
        say(f'downloaded Tiny Shakespeare (sha256 checked) to {path}')
    try:
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8-sig')  # (without Notepad's mark)
    except OSError as e:  # missing, a directory, no permission...
        raise Bad(f'cannot read input file {path}: {e.strerror}; put a text file there '
                  'or pass --input_file=PATH') from e
    except UnicodeDecodeError as e:
        raise Bad(f'input file {path} is not valid UTF-8 (bad byte at offset {e.start})')
    window = ckpt['settings']['block_size'] if ckpt else block_size
    needed = 10 * ((SIZES[0][3] if window == 'auto' else window) + 1)  # a window in each split
    need(len(text) >= needed,
         f'{path} has {len(text)} characters, fewer than the {needed} needed')
    chars = ''.join(sorted(set(text)))  # every distinct character, in order
    if ckpt:  # its vocabulary, holding every character
        unknown = ''.join(sorted(set(chars) - set(ckpt['vocab'])))
        need(not unknown, f'{path} has {len(unknown)} characters that {checkpoint} has never '
             f'seen: {unknown[:40]!r}')
        chars = ckpt['vocab']
    # each character its place (the lecture's stoi), in 1 byte where there are 256 or fewer
    vocab = torch.tensor([ord(c) for c in chars], dtype=torch.int32)  # (as code points)
    points = torch.frombuffer(bytearray(text.encode('utf-32-le')), dtype=torch.int32)
    slices = points.split(2 ** 22)  # (4M at a time: little memory)
    small = torch.uint8 if len(chars) <= 256 else torch.int32
    return chars, torch.cat([torch.searchsorted(vocab, p).to(small) for p in slices])

def encode(chars, text):  # each character's place in the vocabulary (the lecture's stoi)
    unknown = ''.join(sorted(set(text) - set(chars)))
    need(not unknown, f'the prompt has characters that are not in the vocabulary: {unknown!r}')
    return [chars.index(c) for c in text]

@functools.lru_cache(maxsize=2)  # (a batch asks for its passes in order; its arguments say it all)
def pass_starts(p, n, seed, T):  # pass p's windows: an offset and an order drawn for it alone
    gen = torch.Generator().manual_seed(hash((seed, p)))  # (ints hash alike in every process)
    return torch.randint(T, (), generator=gen) + T * torch.randperm(n, generator=gen)

# -------------------------------------------------------------------------------------- checkpoints
def seed_dropout(step):  # new each step and process
    torch.manual_seed(seed + WORLD * step + RANK)  # (a GPU's and a Mac's too)

def read_checkpoint(path):  # raises FileNotFoundError or Bad
    if not os.path.exists(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist; train first, '
                                'or pass --checkpoint=PATH')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)  # (runs no code)
    except Exception as e:
        raise Bad(f'checkpoint {path} cannot be loaded, truncated or not a checkpoint '
                  f'({type(e).__name__})') from e
    origin = ckpt.get('script') if isinstance(ckpt, dict) else None
    need(origin == 'gpt.py', f'{path} is not a gpt.py checkpoint '
         f'(it comes from {origin or "something else"})')
    need(set(SETTINGS) <= set(ckpt.get('settings', ())) and 'ended' in ckpt, f'{path} comes '
         'from an earlier version of gpt.py, which this one does not read: train it again')
    return ckpt

def load_weights(model, weights, path):  # one line where they do not fit
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:  # (another version of gpt.py)
        raise Bad(f'{path} holds weights that do not fit this model '
                  '(from another version of gpt.py?)') from e

def best_weights(ckpt):  # the one its end reported; not ended: the best evaluated
    val, step, weights = ckpt['best']
    if weights is None or ckpt['ended']:
        return ckpt['model'], ''
    return weights, (f'sampling the best model of that run: step {step} of '
                     f'{ckpt["step"]}, val loss {val:.4f}')

def load(path=checkpoint, device=None):  # for one's own code
    """The model a checkpoint holds (its best, as --sample_only=True takes it), in float32 and
    eval mode on device (None: a GPU, else a Mac's, else the CPU). A file it cannot load raises
    FileNotFoundError or ValueError, never an exit."""
    ckpt = read_checkpoint(path)
    model = untrained(ckpt['settings'], len(ckpt['vocab']))
    load_weights(model, best_weights(ckpt)[0], path)
    return model.to(device or SETTINGS['device']).eval(), ckpt['vocab']

@dataclasses.dataclass
class Run:
    """What changes as a run goes on: all that its checkpoint keeps, to go on exactly."""
    vocab: str
    optimizers: list
    scaler: torch.amp.GradScaler  # (float16: scales the loss)
    average: nn.Module = None  # the weights' running average: evaluated, kept
    steps: int = 0  # max_iters, refitted as the run goes
    step: int = 0
    stop_at: float = math.inf  # --stop_after
    best: tuple = (math.inf, 0, None)  # best val loss, its step, those weights
    log: list = dataclasses.field(default_factory=list)
    began: float = 0.0  # when the log's seconds began
    ticked: tuple = (0.0, 0)  # the last progress line's time and step
    saved: float = -math.inf  # when the checkpoint was last written
    refit: dict = None  # see refit
    ended: bool = False  # finish has kept its model and said its final line

    @property
    def end(self):  # the step this run stops at
        return min(self.steps, self.stop_at)

def start_run(model, chars, ckpt, refit=None):  # a new run, or the checkpoint's
    run = Run(chars, *make_optimizers(model, dtype, weight_decay), copy.deepcopy(model).eval(),
              max_iters, refit=refit)
    if ckpt:
        load_weights(run.average, ckpt['average'], checkpoint)
        # each optimizer's state, its groups' settings (the rates, the decay) as they are now
        for opt, state in zip(run.optimizers, ckpt['optimizers']):
            opt.load_state_dict(state | dict(param_groups=opt.state_dict()['param_groups']))
        if ckpt['scaler']:  # (empty: another precision)
            run.scaler.load_state_dict(ckpt['scaler'])
        run.step, run.best, run.log = ckpt['step'], ckpt['best'], ckpt['log']
        need(not ckpt['ended'], f'{checkpoint} holds a run that has ended: sample it with '
             '--sample_only=True, or train a new one')
        need(run.step <= max_iters, f'{checkpoint} has trained {run.step} steps already, '
             f'more than --max_iters={max_iters}')
    run.stop_at = run.step + stop_after if stop_after else math.inf
    run.began = time.time() - float(run.log[-1]['seconds'] if run.log else 0)
    return run

def finish(model, run, train_data, val_data):  # the model kept, the final line, saved
    if run.step < run.steps:  # --stop_after: saved, to go on from
        save_checkpoint(model, run)
        say(f'stopped at step {run.step} of {run.steps}: saved {checkpoint}; resume goes on')
        return
    ends = {split_loss(m, val_data): m for m in (model, run.average)}  # (an average lags)
    val_loss = min(ends)
    model.load_state_dict(ends[val_loss].state_dict())
    best_val, best_step, best_weights = run.best
    if val_loss > best_val:  # worse than at its best: the best evaluated is kept
        say(f'val loss {val_loss:.4f} at the end, {best_val:.4f} at step {best_step}: keeping it')
        model.load_state_dict(best_weights)
        val_loss = best_val
    train_loss = split_loss(model, train_data[:len(val_data)])  # (as much as val)
    read = len(eval_windows(val_data)) * block_size
    part = f' (on {read:,} of {len(val_data):,} validation characters, evenly spread)'
    say(f'final: train loss {train_loss:.4f}, val loss {val_loss:.4f}'
        f'{part if read < len(val_data) - block_size else ""}')
    log_row(run, train_loss=train_loss, val_loss=val_loss, best_val_loss=val_loss)
    run.ended = True
    save_checkpoint(model, run)
    say(f'saved {checkpoint}')

LOG_COLUMNS = ('step', 'seconds', 'characters', 'lr', 'train_loss', 'val_loss',
               'best_val_loss')

def log_row(run, **losses):  # the log written whole
    if RANK or not log_file:
        return
    rate = run.optimizers[0].param_groups[0]['lr']  # Muon's (the others follow it)
    seconds = time.time() - run.began
    run.log.append(dict(step=run.step, seconds=f'{seconds:.1f}', lr=f'{rate:.6g}',
                        characters=run.step * chars_a_step(),
                        **{k: f'{v:.4f}' for k, v in losses.items()}))
    text = io.StringIO()
    csv.DictWriter(text, LOG_COLUMNS).writeheader()
    csv.DictWriter(text, LOG_COLUMNS).writerows(run.log)
    try:  # (Windows: a log open in Excel cannot be replaced; each row writes it whole)
        write_atomically(log_file, lambda f: f.write(text.getvalue().encode('utf-8')))
    except Bad as e:
        say(f'{e}: the log there lacks its newest rows until one can be written (the '
            'checkpoint keeps them all)')

def save_checkpoint(model, run, unless_within=0):  # never a broken model over a good one
    if RANK or time.time() - run.saved < unless_within:
        return
    run.saved = time.time()
    need(all(p.isfinite().all() for p in model.parameters()), f'the weights became '
         f'non-finite by step {run.step}; stopped, {checkpoint} is untouched')
    state = dict(script='gpt.py', model=model.state_dict(), vocab=run.vocab, step=run.step,
                 settings=current(SETTINGS) | dict(max_iters=run.steps),  # (as refitted)
                 best=run.best, log=run.log, ended=run.ended,
                 optimizers=[o.state_dict() for o in run.optimizers],
                 scaler=run.scaler.state_dict(), average=run.average.state_dict())
    write_atomically(checkpoint, lambda f: torch.save(state, f))

# ---------------------------------------------------------------------------- processes and signals
DDP = 'LOCAL_RANK' in os.environ  # under torchrun: a process per device
RANK, WORLD = 0, 1  # the first prints, evaluates, saves, samples

def start_processes():
    global RANK, WORLD, device
    if DDP and device.startswith('cuda'):  # each its own GPU
        device = f'cuda:{os.environ["LOCAL_RANK"]}'
    try:
        torch.empty(1, device=device)
    except Exception as e:
        raise Bad(f'device {device!r} cannot be used here ({first_line(e)[:200]})') from e
    kind = torch.device(device).type
    need(kind in ('cpu', 'cuda', 'mps'),
         f'device {device!r} is not one that gpt.py trains on: cpu, cuda or mps')
    if kind == 'cuda':
        if ':' in device:  # (is_bf16_supported... asks this GPU)
            torch.cuda.set_device(device)
        torch.set_float32_matmul_precision('high')  # TF32 where a GPU has it: ~8x faster
    else:  # 'cpu:0' is 'cpu', for the tests below
        device = kind
    if not DDP:
        return
    # gloo carries no mps tensors, and a Mac has one GPU
    need(device != 'mps', 'torchrun needs CUDA GPUs (NCCL) or the CPU (gloo, with '
         '--device=cpu); on a Mac run python gpt.py')
    if kind == 'cuda':
        dist.init_process_group('nccl', device_id=torch.device(device))
    else:
        dist.init_process_group('gloo')
    RANK, WORLD = dist.get_rank(), dist.get_world_size()

def shared(number, add=False):  # under torchrun: the first process's, or the sum
    if DDP:  # (broadcast_object_list needs numpy)
        value = torch.tensor(float(number), dtype=torch.float64, device=device)
        dist.all_reduce(value) if add else dist.broadcast(value, src=0)
        number = type(number)(value.item())
    return number

def interrupt(model, run):  # Ctrl-C or SIGTERM: save, and all end
    save_checkpoint(model, run)
    say(f'interrupted at step {run.step}: checkpoint saved to {checkpoint}')
    end_processes()
    leave(130)

def end_processes():  # all part together
    if DDP:
        dist.barrier()
        dist.destroy_process_group()

if __name__ == '__main__':  # (also pasted into a notebook cell)
    main()
    # under torchrun every process leaves with os._exit: gloo's threads can outlive the group
    # and abort a normal exit, and a process that failed alone must not wait for the others
    if DDP:
        leave(0)
