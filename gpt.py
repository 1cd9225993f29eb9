"""A character-level GPT, trained from scratch on one text file (Tiny Shakespeare unless told so).

    python gpt.py                                      train on input.txt, save gpt.pt, and sample
    python gpt.py --input_file=my_text.txt             train on your own text (any UTF-8 text)
    python gpt.py --sample_only=True --prompt="ROMEO:" sample from gpt.pt without training
In a notebook: paste this file into a cell and run it, or: import gpt; gpt.main(['--max_iters=20'])
"""
import ast, collections, contextlib, copy, csv, dataclasses, hashlib, inspect, io, math, os, pathlib
import signal, sys, threading, time, timeit, urllib.request, warnings
IMPORTED = time.time()  # run as a program, the time budget counts from here (importing torch too)
warnings.filterwarnings('ignore', message='Failed to initialize NumPy')  # torch works without numpy
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

HERE = os.path.dirname(os.path.abspath(globals().get('__file__', 'gpt.py')))  # (notebook: its own)
# ------------------------ settings, each as --name=value (plan, below the banner, chooses 'auto')
input_file = os.path.join(HERE, 'input.txt')  # the text to train on (UTF-8); fetched if missing
checkpoint = os.path.join(HERE, 'gpt.pt')  # written at evaluations (a minute apart) and at the end
log_file = 'auto'       # the run's losses, as CSV (auto: gpt.csv beside the checkpoint; '': none)
resume = False          # go on training from the checkpoint instead of starting afresh?
sample_only = False     # only load the checkpoint and generate?
time_budget = 300.0     # how many seconds may the whole run take, start to sample, on this machine?
n_layer = 'auto'        # how many transformer blocks?
n_head = 'auto'         # how many attention heads in each block?
n_embd = 'auto'         # how wide is the residual stream?
block_size = 'auto'     # what is the maximum context length for predictions?
batch_size = 'auto'     # how many sequences per step in each process? (torchrun: in each of them)
max_iters = 'auto'      # how many optimizer steps? (the learning rate reaches zero at the last)
max_passes = 50         # at most how many passes over the training text? (more only memorise it)
dropout = 'auto'        # what share of activations is dropped in training? (more, the more passes)
eval_interval = 'auto'  # how many steps between evaluations? (each keeps the best model so far)
ema = 0.99              # what share of the weights' running average does a step keep? (0: none)
eval_chars = 250_000    # at most how many validation characters does an evaluation read?
stop_after = 0          # end this run after this many steps, and save? (0: never; resume goes on)
warmup_iters = 100      # how many steps of linear learning-rate warm-up?
lr = 3e-3               # AdamW's learning rate (the output head)
embed_lr = 0.1          # AdamW's rate for the embedding table, which learns faster with more
pair_rows = 16384       # rows of the table embedding each character with the one before (0: none)
pair_lr = 0.003         # AdamW's rate for that table, whose rows are each seen far less often
muon_lr = 0.02          # Muon's learning rate (the blocks' weight matrices)
grad_clip = 1.0         # clip the gradient norm to this (0: don't)
log_interval = 50       # how many steps between progress lines?
seed = 1337             # seeds the initial weights, the batches and the sample
device = ('cuda' if torch.cuda.is_available() else  # where to train? (--device=cpu: on the CPU)
          'mps' if torch.backends.mps.is_available() else 'cpu')
dtype = 'auto'          # the matmuls' precision: float32, bfloat16, float16 (auto: fastest here)
compile = 'auto'        # torch.compile the model? (auto: on a GPU, where it pays for itself)
prompt = ''             # what text does the sample continue? ('': the vocabulary's first character)
num_chars = 500         # how many characters to generate?
temperature = 1.0       # <1 is more conservative, >1 more adventurous, 0 always takes the likeliest
top_k = 0               # sample among the k likeliest characters only (0: all)
sample_file = ''        # also write the sample to this file

# ---------------------------------------------------------------------------------------- the model
Config = collections.namedtuple(  # the model's shape: the settings of these names, once chosen
    'Config', 'vocab_size n_layer n_head n_embd block_size pair_rows dropout')

def rotate(x, cos, sin):  # rotary positions: each channel pair turned by an angle growing with it
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)

class CausalSelfAttention(nn.Module):
    """Multi-head attention: each position gathers from itself and the positions before it."""
    def __init__(self, config):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)  # all heads' q, k and v
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos, sin, cache=None):
        B, T, C = x.shape
        hs = C // self.n_head
        qkv = self.qkv(x).view(B, T, 3, self.n_head, hs).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        v = qkv[2]
        # QK-norm: each head's queries and keys are normed, so that no update blows up the scores;
        # then turned by position, and back to the values' precision (autocast norms in float32)
        q, k = rotate(F.layer_norm(qkv[:2], (hs,)), cos, sin).type_as(v)
        if cache is not None:
            k, v = cache.add(k, v)
        y = attention(q, k, v, self.dropout if self.training else 0.0)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # the heads side by side again

class SwiGLU(nn.Module):
    """The MLP: half of its units gate the other half (better than GELU here; TUNING.md)."""
    def __init__(self, config):
        super().__init__()
        C, hidden = config.n_embd, 8 * config.n_embd // 3  # (two halves: the 4x MLP's weights)
        self.up, self.down = nn.Linear(C, 2 * hidden, bias=False), nn.Linear(hidden, C, bias=False)

    def forward(self, x):
        gate, value = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * value)

def norm(config):  # each position to zero mean and unit variance; learned gains did not help
    return nn.LayerNorm(config.n_embd, elementwise_affine=False)

class Block(nn.Module):
    """Communication (attention), then computation (MLP), each added to the residual stream."""
    def __init__(self, config):
        super().__init__()
        self.dropout = config.dropout
        self.ln1, self.attn = norm(config), CausalSelfAttention(config)
        self.ln2, self.mlp = norm(config), SwiGLU(config)

    def forward(self, x, cos, sin, cache=None):
        p = self.dropout if self.training else 0.0
        x = x + drop(self.attn(self.ln1(x), cos, sin, cache), p)
        return x + drop(self.mlp(self.ln2(x)), p)

class GPT(nn.Module):
    """Characters in, the next character's logits out: embeddings, the blocks, a norm and a head."""
    def __init__(self, config):
        super().__init__()
        self.config = config
        V, C = config.vocab_size, config.n_embd
        self.embed = nn.Embedding(V, C)
        # each character with the one before it: what a trigram counts, there from the start
        rows = min(config.pair_rows, (V + 1) * V)  # a row for every pair, or shared past pair_rows
        self.pairs = nn.Embedding(rows, C) if rows else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f, self.head = norm(config), nn.Linear(C, V, bias=False)
        for name, p in self.named_parameters():  # small weights, and branches that start near zero
            small = name.endswith(('proj.weight', 'down.weight'))
            nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer) if small else 0.02)

    def forward(self, idx, targets=None, caches=None, start=0, before=None):  # idx (B, T)
        hs = self.config.n_embd // self.config.n_head  # the rotary angles, (T, hs/2):
        freqs = 10000.0 ** -(torch.arange(0, hs, 2, device=idx.device) / hs)
        angles = torch.arange(start, start + idx.size(1), device=idx.device)[:, None] * freqs
        x = self.embed(idx)  # (B, T, C)
        if self.pairs is not None:  # the character before each: `before` (B, 1) first, or none (V)
            V = self.config.vocab_size
            first = torch.full_like(idx[:, :1], V) if before is None else before
            previous = torch.cat((first, idx[:, :-1]), dim=1)  # (B, T)
            x = x + self.pairs((previous * V + idx) % self.pairs.num_embeddings)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        for block, cache in zip(self.blocks, caches or [None] * len(self.blocks)):
            x = block(x, cos, sin, cache)
        logits = self.head(self.ln_f(x))  # (B, T, vocab)
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    @torch.inference_mode()
    def generate(self, idx, n, temperature=1.0, top_k=0, use_cache=True):  # (1, T) -> (1, T + n)
        # each character is predicted as in training, from at most block_size: a cache cannot slide
        # (above layer 1 its keys hold characters that left), so a full window restarts from half
        T = self.config.block_size
        def fresh(window):  # (1, t) -> its logits, and the caches that now hold it
            caches = [KVCache(T) for _ in self.blocks] if use_cache else None
            return self(window, caches=caches), caches
        begin = max(0, idx.size(1) - T)  # where the window starts in idx
        logits, caches = fresh(idx[:, begin:])
        for _ in range(n):
            idx = torch.cat((idx, pick_next(logits[:, -1].float(), temperature, top_k)), dim=1)
            if idx.size(1) - begin > T:  # full: keep its last half, rounded up
                begin = idx.size(1) - (T + 1) // 2
                logits, caches = fresh(idx[:, begin:])
            elif use_cache:  # one new position, its keys and values added to the cache
                at = idx.size(1) - 1 - begin
                logits = self(idx[:, -1:], caches=caches, start=at, before=idx[:, -2:-1])
            else:  # the whole window again: what the cache saves
                logits = self(idx[:, begin:])
        return idx

def pick_next(logits, temperature, top_k):  # logits (B, vocab) -> (B, 1): a character drawn
    if temperature < torch.finfo(logits.dtype).tiny:  # 0, or as good as 0 in this precision
        return logits.argmax(-1, keepdim=True)
    logits = (logits - logits.max(-1, keepdim=True).values) / temperature  # (largest 0: no inf/inf)
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    return torch.multinomial(F.softmax(logits, dim=-1), 1)

# --------------------------- the data (read_data, below the banner, makes each character its place)
def split_data(data):  # the first 90% to train on, the rest to validate
    n_train = int(0.9 * len(data))
    return data[:n_train].to(device), data[n_train:].to(device)

def get_batch(data, gen):  # every process draws all processes' windows and keeps its own batch_size
    ix = torch.randint(len(data) - block_size, (batch_size * WORLD,), generator=gen)[RANK::WORLD]
    xy = data[to_device(ix[:, None] + torch.arange(block_size + 1))].long()  # (B, T + 1)
    return xy[:, :-1], xy[:, 1:]

@torch.no_grad()
def split_loss(model, data, amp):  # the mean cross-entropy over the split's windows, end to end
    starts = eval_windows(data)  # (or, on a large text, eval_chars' worth of them evenly spread)
    model.eval()
    total = 0.0
    for i in range(0, len(starts), 64):
        xy = data[to_device(starts[i:i + 64, None] + torch.arange(block_size + 1))].long()
        with amp:
            total += model(xy[:, :-1], xy[:, 1:]).item() * len(xy)
    model.train()
    return total / len(starts)

# ---------------------------------------------------------------------------------------- training
def make_optimizers(model):  # Muon for the blocks' weights (all matrices), AdamW for the rest
    pairs = [model.pairs.weight] if model.pairs is not None else []
    groups = [dict(params=[model.embed.weight], lr=embed_lr), dict(params=pairs, lr=pair_lr),
              dict(params=[model.head.weight], lr=lr)]
    return [torch.optim.Muon(model.blocks.parameters(), lr=muon_lr, weight_decay=0, ns_steps=3),
            torch.optim.AdamW(groups, betas=(0.9, 0.95), weight_decay=0, fused=device != 'mps')]

def set_learning_rates(run):  # warm up, then decay linearly to zero at max_iters
    warm = min(warmup_iters, max_iters // 2)  # (a short run still reaches its peak, and ends at 0)
    factor = min((run.step + 1) / (warm + 1), (max_iters - run.step) / max(1, max_iters - warm))
    groups = [g for opt in run.optimizers for g in opt.param_groups]
    for group, peak in zip(groups, (muon_lr, embed_lr, pair_lr, lr)):  # the rates given now, always
        group['lr'] = peak * factor

def optimizer_step(model, run, loss):  # backward, and one step of every optimizer
    run.scaler.scale(loss).backward()  # float16 only: the loss scaled up, so that gradients survive
    for opt in run.optimizers:
        run.scaler.unscale_(opt)  # and the gradients back down, so that clipping sees the true ones
    norm = nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    if grad_clip:
        nn.utils.clip_grads_with_norm_(model.parameters(), grad_clip, norm)
    step_every_optimizer(run, norm)  # (float16: none where a gradient overflowed, see below)

@torch.no_grad()
def update_average(run, model):  # what is evaluated: the weights' running average, a smoother model
    keep = min(ema, (1 + run.step) / (10 + run.step))  # (early on, about the last tenth of steps)
    for mean, p in zip(run.average.parameters(), model.parameters()):
        mean.lerp_(p, 1 - keep)

def evaluate(run, val_data, amp):  # the average's val loss; keeps the best so far (for overfit)
    loss = split_loss(run.average, val_data, amp)
    if loss < run.best[0]:
        run.best = (loss, run.step, {k: v.clone() for k, v in run.average.state_dict().items()})
    print(f'step {run.step}: val loss {loss:.4f} (best {run.best[0]:.4f} at step {run.best[1]})')
    log_row(run, val_loss=loss, best_val_loss=run.best[0])

def train(model, run, train_data, val_data, amp):
    net = prepared(model, train_data, amp)  # compiled, and under DDP, where they run
    last = min(max_iters, run.step + stop_after) if stop_after else max_iters
    clock = (time.time(), run.step)  # for the progress lines: since when, and since which step
    with stop_signals() as stop:  # Ctrl-C (or torchrun's SIGTERM) ends the run after a step
        while run.step < last:
            set_learning_rates(run)
            x, y = get_batch(train_data, run.gen)
            seed_dropout(run.step)
            with amp:
                loss = net(x, y)
            optimizer_step(model, run, loss)
            run.step += 1
            update_average(run, model)
            # everything that follows is just diagnostics: progress lines, stopping, evaluations
            if run.step % log_interval == 0 or run.step == last or (stop.is_set() and not DDP):
                clock, last = check_in(model, run, loss, last, clock, stop)  # (and refit_steps)
            if MASTER and run.step % eval_interval == 0 and run.step < max_iters:
                evaluate(run, val_data, amp)
                save_checkpoint(model, run, unless_within=60)  # (a save can take seconds)
                clock = (time.time(), run.step)  # evaluation time is not training time
    if MASTER and run.step < max_iters:  # --stop_after: the run as it stands, to go on from
        save_checkpoint(model, run)
        print(f'stopped at step {run.step} of {max_iters}: saved {checkpoint}; resume goes on')

def finish(model, run, train_data, val_data, amp):  # the final line: the best model, which is saved
    ends = {split_loss(m, val_data, amp): m for m in (model, run.average)}  # (an average can lag)
    val_loss = min(ends)  # the lower of the last weights and their average
    model.load_state_dict(ends[val_loss].state_dict())
    best_val, best_step, best_weights = run.best
    if val_loss > best_val:  # past the turn: the model of the best evaluation is the one to keep
        print(f'val loss {val_loss:.4f} at the end, {best_val:.4f} at step {best_step}: keeping it')
        model.load_state_dict(best_weights)
        val_loss = best_val
    train_loss = split_loss(model, train_data[:len(val_data)], amp)  # (as much as val: all is 9x)
    print(f'final: train loss {train_loss:.4f}, val loss {val_loss:.4f}{how_much_read(val_data)}')
    log_row(run, train_loss=train_loss, val_loss=val_loss, best_val_loss=val_loss)
    save_checkpoint(model, run)
    print(f'saved {checkpoint}')

# ---------------------------------------------------------------------------------------- sampling
def sample(model, chars, prompt='', n=500, temperature=1.0, top_k=0):  # the prompt and n more
    where = next(model.parameters()).device
    context = torch.tensor([[chars.index(c) for c in prompt or chars[0]]], device=where)  # (1, T)
    return ''.join(chars[i] for i in model.generate(context, n, temperature, top_k)[0].tolist())

# ---------------------------------------------------------------------------------------- main
def main(args=None):  # args as on the command line (['--name=value', ...]); None: the command line
    with settings_kept():  # as they were before, at the end: a notebook may call main again
        given, started = start(args)  # the settings given, the output, the device, the processes
        ckpt = load_checkpoint(checkpoint, given) if resume or sample_only else None
        chars, data = (ckpt['vocab'], None) if sample_only else read_data(input_file, ckpt)
        check_prompt(chars)
        choices, why = plan(len(chars), data, ckpt, started)  # every 'auto' setting, chosen once
        globals().update(choices)
        amp = autocast(dtype)
        torch.manual_seed(seed)
        config = Config(len(chars), n_layer, n_head, n_embd, block_size, pair_rows, dropout)
        model = GPT(config).to(device)
        if ckpt:  # sampling takes the best evaluated model; resuming, the latest weights
            load_weights(model, ckpt, best=sample_only)
        announce(model, chars, why, data)
        if data is not None:
            train_data, val_data = split_data(data)
            run = start_run(model, chars, ckpt, why['refit'])
            train(model, run, train_data, val_data, amp)
            if MASTER and run.step == max_iters:  # only a run that has ended reports its best
                finish(model, run, train_data, val_data, amp)
        if MASTER:
            model.eval().to(sampling_dtype())  # each new character reads every weight
            show(sample(model, chars, prompt, num_chars, temperature, top_k))  # (and sample_file)
        end_processes()

# ==================================================================================================
# Here ends what there is to learn about a GPT. Below is plumbing: what runs faster on which
# hardware, the plan, the command line, the text and its download, checkpoints, several processes.
# ==================================================================================================
# -------------------------------------------------------------------------- faster on some hardware
def attention(q, k, v, dropout_p):  # q (B, nh, T, hs), k and v (B, nh, S, hs) -> (B, nh, T, hs)
    if not q.is_cpu:  # is_causal masks the future; a single new query may see every cached key
        return F.scaled_dot_product_attention(q, k, v, is_causal=q.size(-2) > 1,
                                              dropout_p=dropout_p)
    # A CPU's fused kernel computes bfloat16 in float32, slowly (the lecture's form is 2x
    # faster), and it has no dropout: torch then runs its own unfused form, with a slower
    # dropout (11% a step; TUNING.md)
    if v.dtype == torch.bfloat16 or (dropout_p and v.dtype == torch.float32):
        return explicit_attention(q, k, v, dropout_p)
    # in float32 the fused kernel is 3x (training) to 9x (sampling) faster than in a half precision
    # that the CPU has no instructions for; autocast is off so that it leaves float32 as it is
    with torch.autocast('cpu', enabled=False):
        y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                           is_causal=q.size(-2) > 1, dropout_p=dropout_p)
    return y.to(v.dtype)

def explicit_attention(q, k, v, dropout_p):
    # the lecture's form: scores, mask, softmax, weighted sum
    T, S = q.size(-2), k.size(-2)
    # (B, nh, T, S); scaled as q, the smaller
    scores = (q * q.size(-1) ** -0.5) @ k.transpose(-2, -1)
    # each query: keys up to its own
    seen = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    return drop(scores.masked_fill(~seen, float('-inf')).softmax(dim=-1), dropout_p) @ v

def drop(x, p):
    # dropout: each element zeroed with probability p, the rest scaled up by 1 / (1 - p)
    if p == 0:
        return x
    # F.dropout draws its masks 2x slower on a CPU, which makes random numbers one at a time: four
    # 16-bit ones per 64-bit draw, 1.6-2.5x faster again (TUNING.md)
    if x.is_cpu:
        draws = torch.randint(-2 ** 63, 2 ** 63 - 1,
                              (x.numel() // 4 + 1,)).view(torch.int16)[:x.numel()]
        # (each from -32768 to 32767)
        kept = draws.view(x.shape) >= min(round(65536 * p), 65535) - 32768
    else:
        kept = torch.rand(x.shape, device=x.device) >= p
    return x * kept / (1 - p)  # so that what passes on is as large on average

def sampling_dtype():
    # each new character reads every weight: a GPU's are cast once to half precision; a CPU keeps
    # float32, as fast per character and 5x faster over the half windows generate starts
    return torch.float32 if device == 'cpu' else getattr(torch, dtype)

def autocast(precision):  # the matmuls in this precision, everything else as it is
    on = precision != 'float32'
    return torch.autocast(device.split(':')[0], dtype=getattr(torch, precision), enabled=on)

def pick_dtype():  # the precision to train in, and why: the start line says both
    if dtype != 'auto':
        return dtype, 'as asked'
    # T4s, V100s and older cards have no bfloat16: float16 with loss scaling
    if device.startswith('cuda'):
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return (('bfloat16', 'native on this GPU') if native else
                ('float16', 'this GPU has no native bfloat16'))
    # A CPU with bfloat16 instructions (AVX-512 BF16, AMX) multiplies 1.6-5x faster in it than in
    # float32; one without (most laptops) emulates it 10-80x slower. Macs have bfloat16 from macOS
    # 14 on, emulated on M1 and M2 (reported about half float32's speed). Timing one product each
    # way tells which this is.
    where = 'Mac' if device == 'mps' else 'CPU'
    # a Mac's products run asynchronously
    wait = torch.mps.synchronize if device == 'mps' else lambda: None
    def fastest(m):  # of six products (the first one warms up)
        return min(timeit.repeat(lambda: (m @ m, wait()), number=1, repeat=6))
    # a GPU needs more
    m = torch.randn(1024, 1024, device=device) if device == 'mps' else torch.randn(256, 256)
    try:
        speedup = fastest(m) / fastest(m.bfloat16())
    except (RuntimeError, TypeError):  # a Mac before macOS 14
        speedup = 0.0
    speedup = first_process_says(speedup)  # (under torchrun every process takes one precision)
    if speedup == 0:
        return 'float32', f'no bfloat16 on this {where}'
    if speedup > 1:
        return 'bfloat16', f'native on this {where}: {speedup:.1f}x float32\'s matmul speed'
    return ('float32',
            f'bfloat16 is emulated on this {where}: {speedup:.2f}x float32\'s matmul speed')

# what torch 2.9 to 2.13's Muon calls it with
MUON_HOOK = ('grad', 'ns_coefficients', 'ns_steps', 'eps')

def muon_in_float32():
    # training in float32 or float16 (bfloat16 not native, or not asked for): torch.optim.Muon
    # orthogonalises its updates in bfloat16, which a CPU without it emulates ~15x slower than
    # float32 (864 ms against 50 ms a step for the 4 x 192 model, half of the whole step), and which
    # a Mac without it cannot run at all. torch has no public way to choose, so its private function
    # is replaced by the same iteration in float32, only where it still takes what it took when this
    # was written; elsewhere torch's own runs
    muon = getattr(torch.optim, '_muon', None)
    hook = getattr(muon, '_zeropower_via_newtonschulz', None)
    found = tuple(inspect.signature(hook).parameters) if callable(hook) else None
    if found == MUON_HOOK or hook is newton_schulz_float32:
        muon._zeropower_via_newtonschulz = newton_schulz_float32
    elif MASTER:
        print(f'torch.optim.Muon has changed inside (its orthogonalisation takes {found}, '
              f'not {MUON_HOOK}): it runs in bfloat16 as torch has it, which may be slow on '
              'this machine')

def newton_schulz_float32(grad, ns_coefficients, ns_steps, eps):
    # as torch.optim.Muon's, in float32
    a, b, c = ns_coefficients
    # (the wide way round: the Gram matrix is the smaller)
    x = grad.T if grad.size(0) > grad.size(1) else grad
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if grad.size(0) > grad.size(1) else x

def prepared(model, train_data, amp):  # the model as training runs it
    net = compiled(model, train_data, amp) if compile else model
    return DistributedDataParallel(net) if DDP else net

def compiled(model, train_data, amp):
    # torch.compile, tried first: it needs Triton (GPU) or a C++ compiler (CPU)
    start = time.time()
    # a batch of the shape training uses
    x, y = get_batch(train_data, torch.Generator().manual_seed(seed))
    try:
        net = torch.compile(model)
        with amp:
            loss = net(x, y)
        # the forward and backward are compiled now, and the first timed step is a plain one
        loss.backward()
    except Exception as e:
        if MASTER:
            print(f'torch.compile cannot run here ({first_line(e)[:120]}); '
                  'training without it')
        return model
    finally:
        model.zero_grad(set_to_none=True)
    if MASTER:
        print(f'compiled the model in {time.time() - start:.0f} s')
    return net

# -------------------------------------------------------------------- the plan: how large, how long
SIZES = [  # (n_layer, n_head, n_embd, block_size, batch_size), smallest first
    (3, 4, 128, 128, 24),  # a laptop's CPU without bfloat16
    (4, 4, 192, 128, 24),  # two CPU cores with bfloat16
    (6, 8, 256, 256, 32),  # a fast CPU, a Mac
    (6, 6, 384, 256, 64)]  # a GPU: the lecture's size
SIZE_NAMES = ('n_layer', 'n_head', 'n_embd', 'block_size', 'batch_size')
SHAPE_NAMES = SIZE_NAMES[:4] + ('pair_rows',)  # what a checkpoint's model is built with
# a resumed run keeps them, unless told
RUN_NAMES = ('batch_size', 'max_iters', 'dropout', 'eval_interval')
# a larger model learns more from each step, but with fewer steps than this a smaller wins
MIN_STEPS = 1000

def plan(vocab_size, data, ckpt, started):
    # every setting left 'auto', chosen; and why, for the start lines
    # The model's size and the run's length follow the time given, the machine and the text: a slow
    # laptop trains a smaller model than a GPU, and a small text seen too many times is memorised. A
    # resumed run goes on as it was planned (its checkpoint holds the plan), and nothing is timed.
    given = {k: globals()[k] for k in SIZE_NAMES + RUN_NAMES if globals()[k] != 'auto'}
    # (load_checkpoint has refused a shape given that differs; a version without pairs: 0 rows)
    if ckpt:
        given.update({k: ckpt['settings'].get(k, 0) for k in SHAPE_NAMES})
        given.update({k: ckpt['settings'][k] for k in RUN_NAMES if k not in given})
    precision, why_precision = pick_dtype()
    if precision != 'bfloat16':
        muon_in_float32()
    chosen = dict(dtype=precision,
                  compile=device.startswith('cuda') if compile == 'auto' else compile,
                  log_file=(os.path.splitext(checkpoint)[0] + '.csv' if log_file == 'auto' else
                            log_file))
    if data is None:  # sampling only
        return ({**chosen, **given, 'dropout': 0.0},
                dict(precision=why_precision, model='', refit=None))
    def seconds_left(compiling=chosen['compile']):  # less 5% for drift, and compiling's time
        return 0.95 * time_budget - (time.time() - started) - 40 * compiling
    size, step_time, why = plan_model(vocab_size, len(data), given, precision, seconds_left())
    n_train = int(0.9 * len(data))
    training = plan_training(n_train, size, given, step_time, seconds_left())
    # the step timed again as training will run it: dropout makes it dearer (a CPU's much dearer),
    # compiling faster or slower by machine, and training then reuses what torch.compile made here
    if step_time and (training['dropout'] or chosen['compile']):
        timed = training['dropout']
        step_time = first_process_says(time_step(size, vocab_size, precision, timed,
                                                 chosen['compile']))
        fewer = plan_training(n_train, size, given, step_time, seconds_left(compiling=False))
        # the steps may differ, and so the passes: their dropout (or, where that is none,
        # the one timed)
        training = dict(fewer, dropout=fewer['dropout'] or timed)
        how = ('compiled' if chosen['compile'] else '') + (' with dropout' if timed else '')
        why += f'; {step_time * 1000:,.0f} ms {how.strip()}'
    chosen = everyone_follows(dict(given, **chosen, **size, **training))
    tokens = size['batch_size'] * size['block_size'] * WORLD
    warm = min(warmup_iters, training['max_iters'] // 2)  # (the steps are refitted as warm-up ends)
    refit = dict(planned=step_time, n_train=n_train, deadline=started + 0.95 * time_budget,
                 warm=warm, cap=math.ceil(max_passes * n_train / tokens))
    planned = 'max_iters' not in given and step_time and not ckpt
    return chosen, dict(precision=why_precision, model=why, refit=refit if planned else None)

def plan_model(vocab_size, n_text, given, precision, seconds):
    # the largest size that trains MIN_STEPS steps in time, and why; a size given is kept
    fixed = {k: given[k] for k in SIZE_NAMES if k in given}
    if len(fixed) == len(SIZE_NAMES) and 'max_iters' in given:
        return fixed, None, 'as given'
    candidates = [{**dict(zip(SIZE_NAMES, size)), **fixed} for size in SIZES]
    chosen, chosen_time, why = None, None, ''
    for size in candidates:
        if size == chosen or not possible(size, n_text):
            continue
        if chosen and (max_passes * 0.9 * n_text <
                       MIN_STEPS * size['batch_size'] * size['block_size'] * WORLD):
            why = f'; the text is too small for {describe(size)}: fewer than {MIN_STEPS} steps ' \
                  f'in {max_passes} passes'
            break  # a text seen too many times is memorised, the more so by a larger model
        # its step time, by the arithmetic
        guess = chosen_time * work(size) / work(chosen) if chosen else 0
        if guess * MIN_STEPS > 3 * seconds:  # far too slow: not even worth timing
            why = f'; {describe(size)} would take about {guess * 1000:,.0f} ms a step'
            break
        # (all processes alike)
        step_time = first_process_says(time_step(size, vocab_size, precision))
        if chosen and step_time * MIN_STEPS > seconds:
            why = f'; {describe(size)} would take {step_time * 1000:,.0f} ms a step'
            break
        chosen, chosen_time = size, step_time
    if not chosen and seconds <= 0:
        fail(f'the time budget ({time_budget:g} s) is spent before training could start; '
             'give more with --time_budget=')
    if not chosen:
        fail(f'no model of the sizes gpt.py knows fits what was given ({fixed}), or the text, '
             f'or {WORLD} processes')
    return chosen, chosen_time, f'{chosen_time * 1000:,.0f} ms a step here{why}'

def plan_training(n_train, size, given, step_time, seconds):  # max_iters, dropout and eval_interval
    tokens = size['batch_size'] * size['block_size'] * WORLD  # per step, all processes together
    # characters an evaluation reads (the val split is n_train / 9)
    evaluated = min(n_train // 9, eval_chars)
    every = given.get('eval_interval') or max(1, round(10 * evaluated / tokens))
    steps = given.get('max_iters') or math.ceil(max_passes * n_train / tokens)
    if 'max_iters' not in given:
        steps = min(steps, steps_that_fit(n_train, tokens, step_time, seconds, every))
    passes = steps * tokens / n_train
    # dropout from how often each character would be seen: 0.1 more each time the passes double from
    # 8 (in steps of 0.1: on a CPU a little dropout costs as much time as a lot, and it must pay for
    # the steps it costs)
    doublings = int(math.log2(max(1, passes / 4)))
    drop = given['dropout'] if 'dropout' in given else round(0.1 * min(3, doublings), 1)
    return dict(max_iters=steps, dropout=drop, eval_interval=every)

def step_every_optimizer(run, norm):  # and their gradients zeroed, for the next step
    # float16: where a gradient overflowed, the scaler would skip only the optimizer that saw
    # it, while clipping has zeroed the others' gradients (and their momentum would still move
    # them): all skip
    overflowed = run.scaler.is_enabled() and not norm.isfinite()
    for opt in run.optimizers:
        if not overflowed:
            run.scaler.step(opt)
        opt.zero_grad(set_to_none=True)
    run.scaler.update()  # float16: the scale halves after an overflow, and grows again after a calm

def to_device(t):
    # a copy to a GPU that the host does not wait for (from pinned memory): it queues ahead
    return (t.pin_memory().to(device, non_blocking=True) if device.startswith('cuda') else
            t.to(device))

def steps_that_fit(n_train, tokens, step_time, seconds, every):
    # the training steps in these seconds: an evaluation reads its windows forward only, about a
    # third of a step per batch, in the first process alone, while the others wait; and the end
    # evaluates three times (val twice, and train)
    evaluated = min(n_train // 9, eval_chars)
    eval_time = evaluated / tokens * step_time / 3 * WORLD
    return max(1, int((seconds - 3 * eval_time) / (step_time + eval_time / every)))

def refit_steps(run, last, step_time, steps):
    # a planned run's steps, fitted to its step as it runs, at each progress line once warm-up is
    # over: the plan timed a plain step in the machine's first seconds, while training runs
    # compiled, under DDP, on the text, and a machine's speed drifts (TUNING.md, 2026-12-01)
    fit, before = run.refit, max_iters
    fit['seconds'], fit['steps'] = (fit.get('seconds', 0) + step_time * steps,
                                    fit.get('steps', 0) + steps)
    # since warm-up (under torchrun, all alike)
    mean = first_process_says(fit['seconds'] / fit['steps'])
    left = steps_that_fit(fit['n_train'], batch_size * block_size * WORLD, mean,
                          fit['deadline'] - time.time(), eval_interval)
    total = first_process_says(max(run.step + 1, min(run.step + left, fit['cap'])))
    # (the schedule changes little)
    if abs(total - max_iters) <= 0.02 * max_iters and 'refitted' in fit:
        return last
    fit['refitted'] = True
    if MASTER:
        print(f'step {run.step}: {mean * 1000:,.0f} ms a step as it runs '
              f'({fit["planned"] * 1000:,.0f} planned): {total:,} steps in all, to end within '
              'the time budget')
    globals()['max_iters'] = total  # (the plan's last word, refitted)
    return total if last == before else min(last, total)  # (--stop_after: its part of the run)

def describe(size):
    return (f'{size["n_layer"]} x {size["n_embd"]} ({size["n_head"]} heads) on '
            f'{size["block_size"]}-character windows, batch {size["batch_size"]}')

def possible(size, n_text):  # heads of even size; both splits hold a window
    C, nh = size['n_embd'], size['n_head']
    return C % nh == 0 and C // nh % 2 == 0 and n_text >= 10 * (size['block_size'] + 1)

def work(size):
    # multiply-adds of a step, roughly: the blocks' matrices and attention, for every character
    T, C = size['block_size'], size['n_embd']
    return size['batch_size'] * T * size['n_layer'] * (12 * C * C + 2 * T * C)

def time_step(size, vocab_size, precision, dropout_p=0.0, compiled=False):  # a step's seconds here
    config = Config(vocab_size, *(size[k] for k in SIZE_NAMES[:4]), pair_rows, dropout_p)
    model = GPT(config).to(device)
    net = torch.compile(model) if compiled else model  # (its first step compiles it)
    net = DistributedDataParallel(net) if DDP else net  # under torchrun, with its all-reduce
    scaler = torch.amp.GradScaler(device.split(':')[0], enabled=precision == 'float16')
    run = Run('', make_optimizers(model), scaler, None)
    amp = autocast(precision)
    xy = torch.randint(vocab_size, (size['batch_size'], size['block_size'] + 1), device=device)
    # as get_batch makes them: torch.compile specialises to such details
    x, y = xy[:, :-1], xy[:, 1:]
    times = []
    try:
        # the first warms up; then 2 s or so (under torchrun 8 steps: every process must
        # take as many)
        while (len(times) < (8 if DDP else 4) or
               (not DDP and sum(times[1:]) < 2 and len(times) < 20)):
            start = time.time()
            with amp:
                loss = net(x, y)
            optimizer_step(model, run, loss)
            loss.item()  # waits for the device
            times.append(time.time() - start)
    except torch.OutOfMemoryError:  # too large for this device: as if it took forever
        times = [math.inf] * 4
    # torch.compile cannot run here: training will say so, and train the plain model
    except Exception:
        if not compiled:
            raise
        return time_step(size, vocab_size, precision, dropout_p)
    return sum(times[1:]) / (len(times) - 1)

# ----------------------------------------------------------------------- settings, start-up, output
SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'  # of Tiny Shakespeare
TINY_SHAKESPEARE = ('https://raw.githubusercontent.com/karpathy/char-rnn/master/data/'
                    'tinyshakespeare/input.txt')
# the settings: every name from input_file to sample_file, as written at the top
NAMES = list(globals())
SETTINGS = {k: globals()[k]
            for k in NAMES[NAMES.index('input_file'):NAMES.index('sample_file') + 1]}
# what an 'auto' setting is when given
CHOSEN = dict(n_layer=int, n_head=int, n_embd=int, block_size=int, batch_size=int, max_iters=int,
              dropout=float, eval_interval=int, compile=bool)

def start(args):
    # the settings given, and when the time budget started; the output, device, processes
    # the command line is read only where this file is the program run (not in a notebook's
    # kernel, whose own arguments are not settings, nor when imported); called with args, the
    # budget starts now
    program = os.path.abspath(sys.argv[0]) == os.path.abspath(globals().get('__file__', '<cell>'))
    started = IMPORTED if args is None and program else time.time()
    args = sys.argv[1:] if args is None and program else list(args or [])
    # each line out when printed, also into a pipe or a file; characters a console cannot show,
    # escaped (\u0436)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, 'reconfigure'):
            stream.reconfigure(line_buffering=True, errors='backslashreplace')
    if not hasattr(torch.optim, 'Muon'):  # (torch.optim.Muon is new in torch 2.9)
        fail(f'gpt.py needs torch 2.9 or later, and this is torch {torch.__version__}: '
             f'pip install --upgrade "torch>=2.9"')
    given = apply_overrides(args)
    start_processes()  # (and checks the device)
    return given, started

def show(text):  # the sample, on the console and in sample_file (exact UTF-8, whatever the console)
    print(text)
    if sample_file:
        write_atomically(sample_file, lambda f: f.write(text.encode('utf-8')))

def first_line(e):  # of an exception's message, or its name where it has none (an EOFError)
    return (str(e).strip().splitlines() or [type(e).__name__])[0]

def fail(message):  # bad input of any kind ends here: one line, exit status 2, no traceback
    print(f'error: {message}', file=sys.stderr)
    leave(2)

def leave(status):
    # end this process; under torchrun at once, for the reasons given at the end of the file
    if not DDP:
        sys.exit(status)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

def apply_overrides(args):
    # --name=value, value a Python literal (taken as it is for text settings)
    valid = 'valid settings: ' + ', '.join(SETTINGS)
    for arg in args:
        name, eq, text = arg.removeprefix('--').partition('=')
        if not arg.startswith('--') or not eq or name not in SETTINGS:
            fail(f'unknown setting {arg!r}; {valid}')
        default = SETTINGS[name]
        kind = CHOSEN.get(name, type(default))
        try:
            value = text if kind is str or text == default == 'auto' else ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        value = float(value) if kind is float and type(value) is int else value
        if type(value) is not kind and not value == default == 'auto':
            fail(f'--{name} must be of type {kind.__name__}, not {text!r}; {valid}')
        if type(value) is float and not math.isfinite(value):  # (1e400 reads as inf)
            fail(f'--{name} must be a finite number, not {text!r}')
        globals()[name] = value
    def number(k):  # a setting's value, where it is one ('auto' is left to the plan)
        return globals()[k] if globals()[k] != 'auto' else 1
    problems = [f'{k} must be positive' for k in ('time_budget', 'max_passes', 'eval_chars',
                'log_interval', 'n_layer', 'n_head', 'n_embd', 'block_size', 'batch_size',
                'max_iters', 'eval_interval')
                if number(k) <= 0]
    problems += [f'{k} must be between 0 and 1e30' for k in ('stop_after', 'warmup_iters',
                 'num_chars', 'top_k', 'pair_rows', 'temperature', 'grad_clip', 'lr', 'embed_lr',
                 'pair_lr', 'muon_lr')
                 if not 0 <= globals()[k] < 1e30]
    if CHOSEN['n_embd'] == type(n_embd) == type(n_head) and (n_embd % n_head or
                                                             (n_embd // n_head) % 2):
        problems.append(f'n_embd ({n_embd}) must split into n_head ({n_head}) heads of even size')
    if not (dropout == 'auto' or 0 <= dropout < 1):
        problems.append('dropout must be in [0, 1), or auto')
    if not 0 <= ema < 1:
        problems.append('ema must be in [0, 1)')
    if dtype not in ('auto', 'float32', 'bfloat16', 'float16'):
        problems.append("dtype must be 'auto', 'float32', 'bfloat16' or 'float16'")
    if not 0 <= seed < 2 ** 63:
        problems.append('seed must be between 0 and 2**63 - 1')
    paths = map(path_problem, ('checkpoint', 'log_file', 'sample_file'))  # (before training)
    problems += [problem for problem in paths if problem]
    if problems:
        fail('; '.join(problems))
    return {arg.removeprefix('--').partition('=')[0] for arg in args}

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

def check_device():
    try:
        torch.empty(1, device=device)
    except Exception as e:
        fail(f'device {device!r} cannot be used here ({first_line(e)})')
    if torch.device(device).type not in ('cpu', 'cuda', 'mps'):
        fail(f'device {device!r} is not one that gpt.py trains on: cpu, cuda or mps')
    # 'cpu:0' is 'cpu', for every test of the device below
    if torch.device(device).type in ('cpu', 'mps'):
        globals()['device'] = torch.device(device).type
    # so that what is asked of "the GPU" (is_bf16_supported...) is asked of this one
    if device.startswith('cuda:'):
        torch.cuda.set_device(device)
    # float32 matmuls in TF32 on the GPUs that have it (Ampere on): ~8x faster
    if device.startswith('cuda'):
        torch.set_float32_matmul_precision('high')

def announce(model, chars, why, data):  # the start lines: what runs where, and every setting
    if not MASTER:
        return
    print(f'device {device}, dtype {dtype} ({why["precision"]}), '
          f'{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, '
          f'vocabulary {len(chars)}, {WORLD} process{"es" if WORLD > 1 else ""}')
    if data is not None:
        n_train = int(0.9 * len(data))
        print(f'model {describe(globals())}: {why["model"]}')
        passes = max_iters * batch_size * block_size * WORLD / n_train
        most = ' (max_passes: more would only memorise it)' if passes > max_passes - 0.5 else ''
        print(f'training {max_iters} steps: {passes:.1f} passes over {n_train:,} characters{most}, '
              f'dropout {dropout}, evaluating every {eval_interval} steps')
    print('settings: ' + ' '.join(f'{k}={globals()[k]!r}' for k in SETTINGS))

def check_in(model, run, loss, last, clock, stop):
    # at progress lines, and when a lone process is stopped: reading the loss makes the CPU wait for
    # the GPU, so it is read only to log it; under torchrun every process checks in at the same
    # steps (a collective), so Ctrl-C there ends the run at the next line
    loss, stopping = agree(loss, stop.is_set()).tolist()
    if not math.isfinite(loss):
        fail(f'the loss became {loss} at step {run.step}; stopped, the last checkpoint is '
             'untouched')
    # a progress line: the time a step since the last
    if run.step % log_interval == 0 or run.step == last:
        step_time = (time.time() - clock[0]) / (run.step - clock[1])
        if MASTER:
            print(f'step {run.step}/{max_iters} | loss {loss:.4f} | '
                  f'{step_time * 1000:.0f} ms/step | '
                  f'{batch_size * block_size * WORLD / step_time:,.0f} tokens/s | '
                  f'{(last - run.step) * step_time / 60:.1f} min left')
            log_row(run, train_loss=loss)
        # (past the first steps' costs)
        if run.refit and clock[1] > 0 and run.step >= run.refit['warm']:
            last = refit_steps(run, last, step_time, run.step - clock[1])
        clock = (time.time(), run.step)
    if stopping:
        interrupt(model, run)
    return clock, last

@contextlib.contextmanager
def settings_kept():  # every setting put back as it was: main's choices end with it
    before = {k: globals()[k] for k in SETTINGS}
    try:
        yield
    finally:
        globals().update(before)

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

# ----------------------------------------------------------------------------------------- sampling
class KVCache:
    """One layer's keys and values of the window so far: a new character costs one position."""
    def __init__(self, block_size):
        self.block_size, self.kv, self.seen = block_size, None, 0  # kv (2, B, nh, block_size, hs)
    def add(self, k, v):  # k, v (B, nh, T, hs) -> the keys and values cached so far, these included
        if self.kv is None:  # room for one window: generate starts a new cache before it is full
            self.kv = k.new_empty(2, k.size(0), k.size(1), self.block_size, k.size(3))
        self.kv[:, :, :, self.seen:self.seen + k.size(2)] = torch.stack((k, v))
        self.seen += k.size(2)
        return self.kv[:, :, :, :self.seen]

# ----------------------------------------------------------------------------------------- the text
def how_much_read(data):
    # on a large text, the final line says how much of its validation split it read
    read = len(eval_windows(data)) * block_size
    whole = read >= len(data) - block_size
    return '' if whole else f' (on {read:,} of {len(data):,} validation characters, evenly spread)'

def eval_windows(data):
    # the starts of the split's consecutive non-overlapping windows, or of eval_chars' worth of them
    # evenly spread (every evaluation costs a bounded time)
    n = (len(data) - 1) // block_size
    return torch.linspace(0, n - 1,
                          max(1, min(n, eval_chars // block_size))).round().long() * block_size

# characters encoded at once: no Python object per character, and little memory for a large text
SLICE = 2 ** 22
def code_points(text, i):  # of text[i:i + SLICE]
    return torch.frombuffer(bytearray(text[i:i + SLICE].encode('utf-32-le')), dtype=torch.int32)

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
        data = urllib.request.urlopen(TINY_SHAKESPEARE, timeout=60).read()
        problem = ('' if hashlib.sha256(data).hexdigest() == SHA256 else
                   'it sent something else (wrong sha256)')
    except (OSError, ValueError) as e:
        problem = f'failed ({e})'
    if problem:
        fail(f'{path} is missing and downloading {TINY_SHAKESPEARE} {problem}; put a text file '
             'there or pass --input_file=PATH')
    write_atomically(path, lambda f: f.write(data))
    print(f'downloaded Tiny Shakespeare ({len(data):,} bytes, sha256 checked) to {path}')

def vocabulary(text):  # every distinct character, in order
    counts = sum(torch.bincount(code_points(text, i), minlength=0x110000)
                 for i in range(0, len(text), SLICE))
    return ''.join(map(chr, counts.nonzero().flatten().tolist()))

def encode(text, chars):
    # the characters as integers (the lecture's [stoi[c] for c in text]), in the smallest type
    index = torch.zeros(0x110000, dtype=torch.int32)  # code point -> its place in the vocabulary
    index[[ord(c) for c in chars]] = torch.arange(len(chars), dtype=torch.int32)
    small = (torch.uint8 if len(chars) <= 256 else torch.int16 if len(chars) <= 2 ** 15 else
             torch.int32)
    # 1 byte a character for up to 256 distinct ones, not 8
    data = torch.empty(len(text), dtype=small)
    for i in range(0, len(text), SLICE):
        data[i:i + SLICE] = index[code_points(text, i)]
    return data

def read_data(path, ckpt):
    # the text's vocabulary, and the text as integers, checked against what training needs
    if path == SETTINGS['input_file'] and not os.path.exists(path):
        download_tiny_shakespeare(path)
    try:
        text = pathlib.Path(path).read_bytes().decode('utf-8')
    except OSError as e:  # missing, a directory, no permission...
        fail(f'cannot read input file {path}: {e.strerror}; put a text file there or pass '
             '--input_file=PATH')
    except UnicodeDecodeError as e:
        fail(f'input file {path} is not valid UTF-8 (bad byte at offset {e.start})')
    window = (ckpt['settings']['block_size'] if ckpt else SIZES[0][3] if block_size == 'auto' else
              block_size)
    needed = 10 * (window + 1)  # both splits need at least one window and its next character
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


# -------------------------------------------------------------------------------------- checkpoints
@dataclasses.dataclass
class Run:
    """A run besides the weights: what a checkpoint keeps, so that a resumed run goes on exactly."""
    vocab: str
    optimizers: list
    scaler: torch.amp.GradScaler
    gen: torch.Generator  # draws the batches
    step: int = 0
    best: tuple = (math.inf, 0, None)  # the best evaluated val loss, its step, and those weights
    clock: float = 0.0  # when the log's seconds began
    log_rows: list = None  # the log's rows to write before the next (a resumed run's)
    saved: float = -math.inf  # when the checkpoint was last written
    refit: dict = None  # a planned run's steps, to be refitted as its warm-up ends (see plan)
    average: nn.Module = None  # the weights' running average (see update_average)

def seed_dropout(step):  # dropout's masks: new at each step and in each process, the same on resume
    torch.manual_seed(seed + WORLD * step + RANK)  # (seeds the GPU's and the Mac's generators too)


def load_checkpoint(path, given):
    # the model's shape comes from the checkpoint; another one given is an error
    if not os.path.isfile(path):
        fail(f'checkpoint {path} does not exist; train first, or pass --checkpoint=PATH')
    try:
        # weights_only: never runs code
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        fail(f'checkpoint {path} cannot be loaded, truncated or not a checkpoint '
             f'({first_line(e)[:100]})')
    origin = ckpt.get('script') if isinstance(ckpt, dict) else None
    if origin != 'gpt.py':
        fail(f'{path} is not a gpt.py checkpoint (it comes from {origin or "something else"})')
    for k in SHAPE_NAMES:  # (a version without pairs: 0 rows)
        saved, now = ckpt['settings'].get(k, 0), globals()[k]
        if (now != 'auto' if k in SIZE_NAMES else k in given) and now != saved:
            fail(f'--{k}={now} does not fit {path}, whose model has {k}={saved}')
    return ckpt

def load_weights(model, ckpt, best):  # the latest weights, or the best model to sample
    weights, note = best_weights(ckpt) if best else (ckpt['model'], '')
    try:
        model.load_state_dict(weights)
    # other weights' names or shapes: written by another version of this script
    except RuntimeError:
        fail(f'{checkpoint} holds weights that do not fit this model (from another version of '
             'gpt.py?)')
    if note:
        print(note)

def best_weights(ckpt):
    # the model the run reported; for a run stopped early, its best evaluated one
    val, step, weights = ckpt.get('best') or (0.0, 0, None)
    # (an ended run saved its best)
    if weights is None or ckpt['step'] >= ckpt['settings']['max_iters']:
        return ckpt['model'], ''
    return weights, (f'sampling the best model of that run: step {step} of {ckpt["step"]}, '
                     f'val loss {val:.4f}')

# for one's own code: (model, vocabulary), for sample(model, ...)
def load(path='gpt.pt', device=None):
    """The model a checkpoint holds (its best, as --sample_only=True takes it), in float32 and eval
    mode on device (None: a GPU, else a Mac's, else the CPU). Raises FileNotFoundError or
    ValueError: never exits."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise ValueError(f'{path} cannot be loaded: truncated, or not a checkpoint') from e
    if not isinstance(ckpt, dict) or ckpt.get('script') != 'gpt.py':
        raise ValueError(f'{path} is not a gpt.py checkpoint')
    # (a version without pairs: 0 rows)
    shape = {k: ckpt['settings'].get(k, 0) for k in SHAPE_NAMES}
    model = GPT(Config(len(ckpt['vocab']), **shape, dropout=0.0))
    model.load_state_dict(best_weights(ckpt)[0])
    if device is None:
        device = ('cuda' if torch.cuda.is_available() else
                  'mps' if torch.backends.mps.is_available() else 'cpu')
    return model.to(device).eval(), ckpt['vocab']

def start_run(model, chars, ckpt, refit=None):
    # a new run, or the checkpoint's: optimizers, step...
    scaler = torch.amp.GradScaler(device.split(':')[0], enabled=dtype == 'float16')
    run = Run(chars, make_optimizers(model), scaler, torch.Generator().manual_seed(seed),
              refit=refit)
    run.average = copy.deepcopy(model).eval()  # (evaluated only)
    if ckpt:
        try:  # (a version without an average: the weights)
            run.average.load_state_dict(ckpt.get('average', ckpt['model']))
        except RuntimeError:
            fail(f'{checkpoint} holds an average of the weights that does not fit this model')
        for opt, state in zip(run.optimizers, ckpt['optimizers']):
            # the settings of now (fused or not on this device...), not the saved
            for saved, now in zip(state['param_groups'], opt.param_groups):
                saved.update({k: v for k, v in now.items() if k != 'params'})
            try:
                opt.load_state_dict(state)
            except ValueError:  # other groups of weights: written by another version of this script
                fail(f'{checkpoint} holds optimizer state that does not fit this model (from '
                     'another version of gpt.py?); it can still be sampled from with '
                     '--sample_only=True')
        # empty where it was written in another precision: float16 then starts a new scale
        if ckpt['scaler']:
            run.scaler.load_state_dict(ckpt['scaler'])
        run.gen.set_state(ckpt['rng'])
        run.step, run.best = ckpt['step'], ckpt['best']
        if run.step > max_iters:
            fail(f'{checkpoint} has trained {run.step} steps already, more than '
                 f'--max_iters={max_iters}')
    start_log(run, resumed=ckpt is not None)
    return run

LOG_COLUMNS = ('step', 'seconds', 'characters', 'lr', 'train_loss', 'val_loss', 'best_val_loss')

def start_log(run, resumed):
    # a new run starts log_file afresh; a resumed one keeps its rows up to its step
    run.clock = time.time()
    if not (log_file and MASTER):
        return
    rows = []
    if resumed and os.path.isfile(log_file):
        try:
            with open(log_file, newline='', encoding='utf-8') as f:
                rows = [row for row in csv.DictReader(f) if int(row['step']) <= run.step]
        # not a log of this script: started afresh
        except (OSError, ValueError, KeyError, TypeError):
            rows = []
    # its seconds go on from where they were
    run.clock -= float(rows[-1]['seconds']) if rows else 0.0
    # written with the first new row: a run that fails before it leaves the old log
    run.log_rows = rows

def log_row(run, **losses):
    # one row of log_file, written as it comes: a crash keeps the rows so far
    if not (log_file and MASTER):
        return
    rate = run.optimizers[0].param_groups[0]['lr']  # Muon's (the others follow the same schedule)
    row = dict(step=run.step, seconds=f'{time.time() - run.clock:.1f}', lr=f'{rate:.6g}',
               characters=run.step * batch_size * block_size * WORLD,
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

def save_checkpoint(model, run, unless_within=0):
    # never over a good checkpoint with a broken model
    if time.time() - run.saved < unless_within:  # (at an evaluation: at most once a minute)
        return
    run.saved = time.time()
    if not all(p.isfinite().all() for p in model.parameters()):
        fail(f'the weights became non-finite by step {run.step}; stopped, '
             f'{checkpoint} is untouched')
    state = {'script': 'gpt.py', 'model': model.state_dict(), 'vocab': run.vocab, 'step': run.step,
             'settings': {k: globals()[k] for k in SETTINGS}, 'rng': run.gen.get_state(),
             'optimizers': [o.state_dict() for o in run.optimizers],
             'scaler': run.scaler.state_dict(), 'best': run.best,
             'average': run.average.state_dict()}
    write_atomically(checkpoint, lambda f: torch.save(state, f))

# ---------------------------------------------------------------------------- processes and signals
# under torchrun: one process per device, each taking its share of every batch
DDP = 'LOCAL_RANK' in os.environ
# MASTER: the first process, the only one that prints, evaluates, saves, samples
RANK, WORLD, MASTER = 0, 1, True

def start_processes():
    global RANK, WORLD, MASTER
    # each process its own GPU, before anything opens GPU 0 in all of them
    if DDP and device.startswith('cuda'):
        globals()['device'] = f'cuda:{os.environ["LOCAL_RANK"]}'
    check_device()
    if not DDP:
        return
    # gloo, the only backend a Mac has, carries no mps tensors; and a Mac has one GPU
    if device == 'mps':
        fail('torchrun needs CUDA GPUs (NCCL) or the CPU (gloo, with --device=cpu); on a Mac run '
             'python gpt.py')
    if device.startswith('cuda'):
        torch.cuda.set_device(device)
        dist.init_process_group('nccl', device_id=torch.device(device))
    else:
        dist.init_process_group('gloo')
    RANK, WORLD = dist.get_rank(), dist.get_world_size()
    MASTER = RANK == 0

def agree(loss, stop):
    # (the mean loss over all processes, > 0 if any asked to stop), on the loss's device:
    status = torch.stack((loss.detach().float(), torch.tensor(float(stop), device=loss.device)))
    if DDP:  # NCCL reduces only GPU tensors, gloo CPU ones
        dist.all_reduce(status)
    return status / WORLD

def everyone_follows(settings):
    # the first process's plan, so that every process trains the same model
    return {k: v if isinstance(v, str) else first_process_says(v) for k, v in settings.items()}

def first_process_says(number):
    # under torchrun, the first process's number (a timing, a setting) in all
    if DDP:  # (in a tensor: broadcast_object_list needs numpy, which torch does not install)
        value = torch.tensor(float(number), dtype=torch.float64, device=device)
        dist.broadcast(value, src=0)
        number = type(number)(value.item())
    return number

def interrupt(model, run):
    # Ctrl-C, or torchrun's SIGTERM, in any process: the first one saves, and all end
    if MASTER:
        save_checkpoint(model, run)
        print(f'interrupted at step {run.step}: checkpoint saved to {checkpoint}')
    end_processes()
    leave(130)

def end_processes():
    # the others wait for the first process's evaluation, so that all part together
    if DDP:
        dist.barrier()
        dist.destroy_process_group()

if __name__ == '__main__':  # (also in a notebook cell that this file is pasted into: it runs there)
    # Under torchrun every process leaves with os._exit (see leave): gloo's threads outlive
    # destroy_process_group (once torch._dynamo is imported, as the optimizers do) and can abort a
    # normal exit; and a process that failed alone (a save that could not be written) must not wait
    # for the others in a collective that never comes
    try:
        main()
    except KeyboardInterrupt:  # outside the training loop there is nothing to save
        leave(130)
    except BrokenPipeError:  # the output's reader has gone (python gpt.py | head): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        leave(1)
    # out of memory: a GPU's or a Mac's (torch.OutOfMemoryError), or a CPU's allocator's; else,
    # under torchrun, mostly another process gone (gloo then says "Connection closed")
    except RuntimeError as e:
        if isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e):
            fail(f'out of memory on {device}: try a smaller model or batch (--n_embd=, '
                 '--batch_size=)')
        if not DDP:
            raise
        fail(f'process {RANK} stopped: {first_line(e)[:200]}')
    if DDP:
        leave(0)
