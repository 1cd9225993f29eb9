"""A character-level GPT trained from scratch on one text file (Tiny Shakespeare unless told otherwise).
Train with `python gpt.py` (or `torchrun --nproc_per_node=N gpt.py`), sample from the saved model with
`python gpt.py --sample_only=True --prompt="ROMEO:"`; any setting below can be overridden as --name=value."""
import ast, hashlib, math, os, pathlib, signal, sys, time, urllib.request, warnings
warnings.filterwarnings('ignore', message='Failed to initialize NumPy')  # torch works without numpy, and says so
import torch
import torch.nn as nn
import torch.nn.functional as F

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
        return pathlib.Path(path).read_bytes().decode('utf-8')
    except OSError as e:  # missing, a directory, no permission...
        fail(f'cannot read input file {path}: {e.strerror}; put a text file there or pass --input_file=PATH')
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
    if origin != 'gpt.py':
        fail(f'{path} is not a gpt.py checkpoint (it comes from {origin or "something else"})')
    return ckpt

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
    # A CPU with bfloat16 instructions (AVX-512 BF16, AMX) multiplies 3-4x faster in it than in float32; one
    # without (most laptops) emulates it 10-80x slower. Timing one small product each way tells which this is.
    a = torch.randn(256, 256)
    def seconds(dt):  # the fastest of five products, after a warm-up
        b = a.to(dt)
        times = []
        for _ in range(6):
            t = time.perf_counter()
            b @ b
            times.append(time.perf_counter() - t)
        return min(times[1:])
    speedup = seconds(torch.float32) / seconds(torch.bfloat16)
    if speedup > 1:
        return 'bfloat16', f'native on this CPU: {speedup:.1f}x float32\'s matmul speed'
    return 'float32', f'bfloat16 is emulated on this CPU: {speedup:.2f}x float32\'s matmul speed'

def plan_training(n_train, vocab_size):  # max_iters, dropout and eval_interval, where left to the text
    tokens = batch_size * block_size  # per step
    # per character, the blocks' matrices cost 12 n_layer n_embd^2 multiply-adds and the output layer
    # vocab_size n_embd: a large vocabulary gets fewer steps in the same time
    blocks = 12 * n_layer * n_embd ** 2
    affordable = budget_iters * (blocks + 65 * n_embd) // (blocks + vocab_size * n_embd)
    steps = max_iters or min(affordable, math.ceil(max_passes * n_train / tokens))
    passes = steps * tokens / n_train
    # dropout from how often each character is seen: none up to 3 passes, 0.1 more each time the passes double
    drop = dropout if dropout >= 0 else round(min(0.3, 0.1 * math.log2(max(1, passes / 3))), 2)
    every = eval_interval or max(1, round(10 * n_train / 9 / tokens))  # the validation split is n_train / 9
    return steps, drop, every, passes

def compile_works():  # torch.compile needs Triton on a GPU and a C++ compiler on a CPU; try a tiny function
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2, device=device))
        return True
    except Exception as e:
        print(f'torch.compile cannot run here ({str(e).strip().splitlines()[0][:120]}); training without it')
        return False

# ---------------------------------------------------------------------------------- the model
def rotate(x, cos, sin):  # rotary positions: turn each channel pair by an angle that grows with the position
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)

class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)  # query, key and value of all heads at once
        self.proj = nn.Linear(n_embd, n_embd, bias=False)

    def forward(self, x, cos, sin, cache):
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, n_head, C // n_head).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        if x.is_cpu:  # the CPU's attention is 3x (training) to 9x (sampling) faster in float32 (measured)
            qkv = qkv.float()
        # each head's queries and keys are normalized, so that no weight update can make the attention scores
        # explode (it also lowered the CPU run's val loss by 0.03, measured); then rotary positions, and back to
        # the values' dtype, since autocast runs the norm in float32 and attention wants all three alike
        (q, k), v = rotate(F.layer_norm(qkv[:2], (C // n_head,)), cos, sin).type_as(qkv), qkv[2]
        if cache is not None:  # generating: a ring of the last block_size keys and values, where a new position
            # overwrites the oldest (the keys carry their positions, and attention ignores the order of the keys)
            if not cache:  # the first call brings the prompt, at most block_size positions: it lands in order
                cache[:] = [k.new_empty(2, B, n_head, block_size, C // n_head), 0]
            kv, seen = cache
            kv[:, :, :, seen % block_size:seen % block_size + T] = torch.stack((k, v))
            k, v = kv[:, :, :, :min(seen + T, block_size)]
            cache[1] = seen + T
        with torch.autocast('cpu', enabled=False):  # so CPU autocast leaves them so; a GPU's is untouched
            # is_causal masks the future; a single new query may see every cached key
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, dropout_p=dropout if self.training else 0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C).type_as(x))

def norm():  # each position's vector to zero mean and unit variance; learned gains and biases did not help
    return nn.LayerNorm(n_embd, elementwise_affine=False)

class Block(nn.Module):  # communication (attention) then computation (MLP), each on a normed residual branch
    def __init__(self):
        super().__init__()
        self.ln1, self.attn, self.ln2 = norm(), SelfAttention(), norm()
        hidden = 8 * n_embd // 3  # two halves of this width hold as many weights as the usual 4x MLP
        self.up, self.down = nn.Linear(n_embd, 2 * hidden, bias=False), nn.Linear(hidden, n_embd, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cos, sin, cache=None):
        x = x + self.drop(self.attn(self.ln1(x), cos, sin, cache))
        gate, value = self.up(self.ln2(x)).chunk(2, dim=-1)  # SwiGLU: half of the MLP's units gate the other
        return x + self.drop(self.down(F.silu(gate) * value))  # half, better than GELU here (measured)

class GPT(nn.Module):
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
        x = self.embed(idx)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        for block, cache in zip(self.blocks, caches or [None] * n_layer):
            x = block(x, cos, sin, cache)
        logits = self.head(self.ln_f(x))
        return logits if targets is None else F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    @torch.inference_mode()
    def generate(self, idx, n, use_cache=True):  # idx (1, T) -> (1, T + n)
        caches = [[] for _ in self.blocks] if use_cache else None
        logits = self(idx[:, -block_size:], caches=caches, start=max(0, idx.size(1) - block_size))
        for _ in range(n):
            logits = logits[:, -1].float()
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float('-inf'))
                nxt = torch.multinomial(F.softmax(logits, dim=-1), 1)
            idx = torch.cat((idx, nxt), dim=1)
            # with the cache each new character costs one position; without, the whole window again
            logits = self(nxt, caches=caches, start=idx.size(1) - 1) if use_cache else self(idx[:, -block_size:])
        return idx

# ---------------------------------------------------------------------------------- training
def main():
    explicit = apply_overrides(sys.argv[1:])
    rank, world, ddp = 0, 1, 'LOCAL_RANK' in os.environ
    if ddp:  # under torchrun: one process per device, each taking its own share of every batch
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel
        dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo')
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.startswith('cuda'):
            globals()['device'] = f'cuda:{os.environ["LOCAL_RANK"]}'
            torch.cuda.set_device(device)
        if batch_size % world:
            fail(f'batch_size ({batch_size}) must divide evenly among {world} processes')
    master = rank == 0  # only the first process prints, evaluates, saves and samples

    ckpt = load_checkpoint(checkpoint) if resume or sample_only else None
    if ckpt:  # the model's shape comes from the checkpoint; an explicit different one is an error
        for k in ('n_layer', 'n_head', 'n_embd', 'block_size'):
            if k in explicit and globals()[k] != ckpt['settings'][k]:
                fail(f'--{k}={globals()[k]} does not fit {checkpoint}, whose model has {k}={ckpt["settings"][k]}')
            globals()[k] = ckpt['settings'][k]
    if not sample_only:
        text = read_text(input_file)
        unknown = ''.join(sorted(set(text) - set(ckpt['vocab']))) if ckpt else ''
        if unknown:
            fail(f'{input_file} has characters that {checkpoint} has never seen: {unknown!r}')
        if len(text) < 10 * (block_size + 1):  # both splits need at least one window and its next character
            fail(f'{input_file} has {len(text)} characters, fewer than the {10 * (block_size + 1)} needed')
    chars = ckpt['vocab'] if ckpt else ''.join(sorted(set(text)))  # the vocabulary: every distinct character
    stoi = {c: i for i, c in enumerate(chars)}
    if sample_only:
        globals()['dropout'] = 0.0  # (the settings left to the text are chosen when there is one)
    else:
        n_train = int(0.9 * len(text))
        steps, drop, every, passes = plan_training(n_train, len(chars))
        globals().update(max_iters=steps, dropout=drop, eval_interval=every)
        if master:
            print(f'training {steps} steps: {passes:.1f} passes over {n_train:,} characters, dropout {drop}, '
                  f'evaluating every {every} steps')
    unknown = ''.join(sorted(set(prompt) - set(chars)))
    if unknown:
        fail(f'the prompt has characters that are not in the vocabulary: {unknown!r}')

    torch.manual_seed(seed)
    model = GPT(len(chars)).to(device)
    if ckpt:
        try:
            model.load_state_dict(ckpt['model'])
        except RuntimeError:  # other weights' names or shapes: written by another version of this script
            fail(f'{checkpoint} holds weights that do not fit this model (from another version of gpt.py?)')
    globals()['dtype'], why = pick_dtype()
    amp = torch.autocast(device.split(':')[0], dtype=getattr(torch, dtype), enabled=dtype != 'float32')
    # float16's narrow range would round small gradients to zero: the loss is scaled up before backward, and the
    # gradients down before the step (steps whose gradients overflow are skipped); a no-op in other precisions
    scaler = torch.amp.GradScaler(device.split(':')[0], enabled=dtype == 'float16')
    if master:
        print(f'device {device}, dtype {dtype} ({why}), {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, '
              f'vocabulary {len(chars)}, {world} process{"es" if world > 1 else ""}')
        print('settings: ' + ' '.join(f'{k}={globals()[k]!r}' for k in SETTINGS))

    if not sample_only:
        data = torch.tensor([stoi[c] for c in text], device=device)
        train_data, val_data = data[:n_train], data[n_train:]
        matrices, embedding, rest = [], [], []  # Muon takes only the blocks' weight matrices, AdamW the others
        for name, p in model.named_parameters():
            (matrices if p.ndim == 2 and name.startswith('blocks') else embedding if name == 'embed.weight'
             else rest).append(p)
        optimizers = [torch.optim.Muon(matrices, lr=muon_lr, weight_decay=0, ns_steps=3),  # 3 steps do as well as 5
                      torch.optim.AdamW([dict(params=embedding, lr=embed_lr), dict(params=rest, lr=lr)],
                                        betas=(0.9, 0.95), weight_decay=0, fused=device != 'mps')]
        gen = torch.Generator().manual_seed(seed)  # draws the batches; saved so that a resumed run draws the same
        step = 0
        # the best evaluated model so far: on a small text the model starts memorising, and val loss turns up
        best_val, best_step, best_weights = math.inf, 0, None
        if ckpt:  # resuming: the optimizers, the step count and the random numbers go on too
            for opt, state in zip(optimizers, ckpt['optimizers']):
                opt.load_state_dict(state)
            step = ckpt['step']
            gen.set_state(ckpt['rng'])
            torch.set_rng_state(ckpt['torch_rng'])
            scaler.load_state_dict(ckpt['scaler'])
            best_val, best_step, best_weights = ckpt['best']

        def save():  # never over a good checkpoint with a broken model
            if not all(p.isfinite().all() for p in model.parameters()):
                fail(f'the weights became non-finite by step {step}; stopped, {checkpoint} is untouched')
            state = {'script': 'gpt.py', 'model': model.state_dict(), 'vocab': chars, 'step': step,
                     'settings': {k: globals()[k] for k in SETTINGS}, 'rng': gen.get_state(),
                     'torch_rng': torch.get_rng_state(), 'optimizers': [o.state_dict() for o in optimizers],
                     'scaler': scaler.state_dict(), 'best': (best_val, best_step, best_weights)}
            write_atomically(checkpoint, lambda f: torch.save(state, f))

        @torch.no_grad()
        def split_loss(data):  # mean cross-entropy over the whole split, in consecutive non-overlapping windows
            n = (len(data) - 1) // block_size
            x, y = data[:n * block_size].view(n, block_size), data[1:n * block_size + 1].view(n, block_size)
            model.eval()
            with amp:
                total = sum(model(x[i:i + 64], y[i:i + 64]).item() * len(x[i:i + 64]) for i in range(0, n, 64))
            model.train()
            return total / n

        def get_batch():  # every process draws the same batch_size windows and keeps its own share
            ix = torch.randint(len(train_data) - block_size, (batch_size,), generator=gen)[rank::world]
            xy = train_data[(ix[:, None] + torch.arange(block_size + 1)).to(device)]  # (B, T + 1)
            return xy[:, :-1], xy[:, 1:]

        net = torch.compile(model) if compile and compile_works() else model
        net = DistributedDataParallel(net) if ddp else net
        stop = []  # Ctrl-C (or torchrun's SIGTERM) ends the run cleanly at the end of the current step
        before = {sig: signal.signal(sig, lambda *_: stop.append(True)) for sig in (signal.SIGINT, signal.SIGTERM)}
        last = min(max_iters, step + stop_after) if stop_after else max_iters
        groups = [g for opt in optimizers for g in opt.param_groups]  # after resuming, which replaces them
        t_log, s_log = time.time(), step
        while step < last:
            factor = min((step + 1) / (warmup_iters + 1), (max_iters - step) / max(1, max_iters - warmup_iters))
            for g, peak in zip(groups, (muon_lr, embed_lr, lr)):  # the rates given now, also when resuming
                g['lr'] = peak * factor  # warm up, then decay linearly to zero at max_iters
            x, y = get_batch()
            with amp:
                loss = net(x, y)
            scaler.scale(loss).backward()
            for opt in optimizers:
                scaler.unscale_(opt)  # so that clipping sees the true gradients
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            for opt in optimizers:
                scaler.step(opt)
                opt.zero_grad(set_to_none=True)
            scaler.update()
            step += 1
            status = torch.tensor([loss.item(), float(bool(stop))])
            if ddp:  # the mean loss over all processes, and a stop that any of them asked for
                dist.all_reduce(status)
                status[0] /= world
            loss = status[0].item()
            if not math.isfinite(loss):
                fail(f'the loss became {loss} at step {step}; stopped, the last checkpoint written is untouched')
            if master and (step % log_interval == 0 or step == last):
                dt = (time.time() - t_log) / (step - s_log)
                print(f'step {step}/{max_iters} | loss {loss:.4f} | {dt * 1000:.0f} ms/step | '
                      f'{batch_size * block_size / dt:,.0f} tokens/s | {(last - step) * dt / 60:.1f} min left')
                t_log, s_log = time.time(), step
            if status[1]:
                if master:
                    save()
                    print(f'interrupted at step {step}: checkpoint saved to {checkpoint}')
                sys.exit(130)
            if master and step % eval_interval == 0 and step < last:
                val_loss = split_loss(val_data)
                if val_loss < best_val:
                    best_val, best_step = val_loss, step
                    best_weights = {k: v.clone() for k, v in model.state_dict().items()}
                print(f'step {step}: val loss {val_loss:.4f} (best {best_val:.4f} at step {best_step})')
                save()
                t_log, s_log = time.time(), step  # evaluation time is not training time
        for sig, handler in before.items():
            signal.signal(sig, handler)
        if master:
            val_loss = split_loss(val_data)
            if val_loss > best_val:  # past the turn: the model of the best evaluation is the one to keep
                print(f'val loss {val_loss:.4f} at the end, {best_val:.4f} at step {best_step}: keeping that model')
                model.load_state_dict(best_weights)
                val_loss = best_val
            # the train loss over a stretch as long as the validation split (the whole takes 9x as long)
            train_loss = split_loss(train_data[:len(val_data)])
            print(f'final: train loss {train_loss:.4f}, val loss {val_loss:.4f}')
            save()
            print(f'saved {checkpoint}')
        if ddp:  # the others wait for the first process's evaluation, so that all part together
            dist.barrier()
            dist.destroy_process_group()
    if not master:
        return

    # ---------------------------------------------------------------------------------- sampling
    context = torch.tensor([[stoi[c] for c in prompt or chars[0]]], device=device)
    # each new character reads every weight, so they are cast once to half precision: on a CPU float16, whose
    # matrix-vector products run ~2x faster than bfloat16's (measured)
    model.eval().to(getattr(torch, 'float16' if device == 'cpu' and dtype != 'float32' else dtype))
    sample = ''.join(chars[i] for i in model.generate(context, num_chars)[0].tolist())
    print(sample)
    if sample_file:
        write_atomically(sample_file, lambda f: f.write(sample.encode('utf-8')))

if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:  # outside the training loop there is nothing to save
        sys.exit(130)
    if 'LOCAL_RANK' in os.environ:  # under torchrun: gloo's threads outlive destroy_process_group (once torch._dynamo
        sys.stdout.flush()  # is imported, as the optimizers do) and can abort a normal exit, so leave at once
        os._exit(0)
