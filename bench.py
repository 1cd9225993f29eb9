"""Benchmark gpt.py on the machine at hand and print every figure (nothing here asserts; the tests do that).

    python bench.py                  all three parts, about 10 minutes on a 2-core CPU
    python bench.py train            1. `python gpt.py` with its defaults: whole-process wall time and final val loss
    python bench.py throughput       2. training tokens/s at the lecture's size, against a lecture-style model and,
                                        given --lecture=PATH, the lecture's own gpt.py (karpathy/ng-video-lecture)
    python bench.py sampling         3. 2,000 characters from a lecture-size model, with and without the KV cache
    python bench.py precision        4. ms per step of gpt.py's CPU model in the precision it picks, float32 and
                                        bfloat16, natively and as on a CPU without bfloat16 (emulated, AVX2 only)
    python bench.py panel            5. gpt.py's defaults on texts of many sizes, kinds and alphabets, against the
                                        best smoothed character n-gram model (about 45 minutes on a 2-core CPU)
    python bench.py budget           6. `python gpt.py` with its defaults on four machines (this CPU with 2 and 1
                                        threads, natively and capped at AVX2): what it chooses, wall time, val loss
    python bench.py large            7. a text of 100 million characters: reading and encoding speed, peak memory,
                                        and the default run on it
    python bench.py step             8. gpt.py's CPU step: its time, its parts (matmuls, attention, optimizers, the
                                        rest) and its limit (its own matmuls alone), natively and capped at AVX2
    python bench.py markov           9. gpt.py's defaults on three texts from an order-2 Markov chain (300,000
                                        characters each), against the best n-gram and the best possible loss
    python bench.py gpu             10. the check to run first where a GPU is lent (8 minutes at most): the default
                                        run, torchrun on every GPU against it, float32 resumed in float16, sampling,
                                        and a profile of ten training steps (--smoke: on the CPU, in seconds)
    python bench.py plot gpt.csv     a run's log as a picture, gpt.png: the train and val loss against the step
                                        (--reference=1.7008:n-gram adds a line; needs matplotlib)
    python bench.py panel --smoke    any part at toy sizes, in seconds: it runs and prints, its figures mean nothing
Runs on the CPU unless --device=cuda is given. Needs input.txt beside gpt.py (gpt.py fetches it) for part 1.
"""
import collections, copy, csv, glob, gettext, itertools, math, os, random, re, subprocess, sys, sysconfig, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore', message='Failed to initialize NumPy')  # torch works without numpy
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.argv, args = sys.argv[:1], sys.argv[1:]  # gpt.py reads its own settings from sys.argv when run, not imported
sys.path.insert(0, str(HERE))
import gpt  # noqa: E402
gpt.dropout = 0.0  # the models built here only time steps and sampling (gpt.py leaves it to the text)
SIZE_NAMES = ('n_layer', 'n_head', 'n_embd', 'block_size', 'batch_size')
for name, value in zip(SIZE_NAMES, gpt.SIZES[2]):  # the models built here: 4 x 192, as the figures were measured
    setattr(gpt, name, value)


def gpt_model():  # gpt.py's model at the size set in gpt's settings above (or changed by a part), no dropout
    return gpt.GPT(gpt.Config(VOCAB, gpt.n_layer, gpt.n_head, gpt.n_embd, gpt.block_size, gpt.pair_rows, 0.0))

device = next((a.split('=', 1)[1] for a in args if a.startswith('--device=')), 'cpu')
parts = [a for a in args if not a.startswith('--')] or ['train', 'throughput', 'sampling', 'precision']
LECTURE = dict(n_layer=6, n_head=6, n_embd=384, block_size=256)  # the lecture's gpt.py, with batch 64
BATCH, VOCAB = 64, 65
STEPS, PEAK_N, CHARS, REPS = 3, 2048, 2000, 3  # steps timed, matmul size for the peak, characters sampled, repeats
GPT_ARGS, TRAIN_ARGS = [], []  # settings for every `python gpt.py` run here, and for part 1's only (none: defaults)
OUT = HERE  # where those runs write their checkpoints and texts
LARGE = 100_000_000  # characters of part 7's text
STEP_REPS = 10  # steps timed and profiled in part 8
# (the parts read these when they run, so that --smoke, at the bottom, can shrink them all)


def peak_gflops(dtype, reps=10):  # what a large square matmul reaches here: the ceiling for a model
    n = PEAK_N
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    t = time.time()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize() if device == 'cuda' else None
    return 2 * n ** 3 * reps / (time.time() - t) / 1e9


class LectureGPT(nn.Module):
    """The lecture's model as it is usually written: one module per head, explicit masked softmax, learned position
    embeddings, dropout 0.2, float32. Written here only to be timed beside gpt.py at the same size."""

    def __init__(self, n_layer, n_head, n_embd, block_size):
        super().__init__()
        hs = n_embd // n_head

        class Head(nn.Module):
            def __init__(self):
                super().__init__()
                self.key, self.query, self.value = (nn.Linear(n_embd, hs, bias=False) for _ in range(3))
                self.register_buffer('tril', torch.tril(torch.ones(block_size, block_size)))
                self.dropout = nn.Dropout(0.2)

            def forward(self, x):
                T = x.shape[1]
                wei = self.query(x) @ self.key(x).transpose(-2, -1) * hs ** -0.5
                wei = F.softmax(wei.masked_fill(self.tril[:T, :T] == 0, float('-inf')), dim=-1)
                return self.dropout(wei) @ self.value(x)

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.heads = nn.ModuleList(Head() for _ in range(n_head))
                self.proj, self.drop = nn.Linear(n_embd, n_embd), nn.Dropout(0.2)
                self.ffwd = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.ReLU(), nn.Linear(4 * n_embd, n_embd),
                                          nn.Dropout(0.2))
                self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)

            def forward(self, x):
                x = x + self.drop(self.proj(torch.cat([h(self.ln1(x)) for h in self.heads], dim=-1)))
                return x + self.ffwd(self.ln2(x))

        self.tok, self.pos = nn.Embedding(VOCAB, n_embd), nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[Block() for _ in range(n_layer)])
        self.ln_f, self.head = nn.LayerNorm(n_embd), nn.Linear(n_embd, VOCAB)

    def forward(self, idx, targets):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        logits = self.head(self.ln_f(self.blocks(x)))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def tokens_per_second(step, steps):
    step()  # warm-up
    t = time.time()
    for _ in range(steps):
        step()
    torch.cuda.synchronize() if device == 'cuda' else None
    return BATCH * LECTURE['block_size'] * steps / (time.time() - t)


def part_train():
    print('1. python gpt.py with its defaults (whole process: start-up, training, evaluation, sample)')
    t = time.time()
    out = subprocess.run([sys.executable, str(HERE / 'gpt.py'), f'--device={device}',
                          f'--checkpoint={OUT / "bench_gpt.pt"}', *GPT_ARGS, *TRAIN_ARGS],
                         capture_output=True, text=True)
    wall = time.time() - t
    final = re.search(r'^final: .*$', out.stdout, re.M)
    print(f'   wall time {wall:.0f} s, {final[0] if final else "no final line: " + out.stderr[-500:]}')
    Path(OUT / 'bench_gpt.pt').unlink(missing_ok=True)


def lecture_script_tokens_per_second(path, steps):  # the lecture's own gpt.py, run as it is but shorter
    if not Path(path).is_file() or '--smoke' in args:  # (at its own size, it would not be a smoke test)
        return f'{path} is not a file' if '--smoke' not in args else 'not with --smoke'
    source = Path(path).read_text(encoding='utf-8')
    changes = {'max_iters = 5000': 'max_iters = {}', 'eval_iters = 200': 'eval_iters = 1',
               'max_new_tokens=500': 'max_new_tokens=1'}
    if not all(old in source for old in changes):
        return f'{path} is not the lecture\'s gpt.py (it has no {" / ".join(changes)})'

    def seconds(iters):  # both runs evaluate twice (at iteration 0 and the last): their difference is `steps` steps
        code = source
        for old, new in changes.items():
            code = code.replace(old, new.format(iters))
        t = time.time()
        out = subprocess.run([sys.executable, '-c', code], cwd=HERE, capture_output=True, text=True)  # its input.txt
        return time.time() - t if out.returncode == 0 else math.nan
    per_step = (seconds(2 + steps) - seconds(2)) / steps
    return BATCH * LECTURE['block_size'] / per_step


def part_throughput():
    steps = STEPS
    print(f'2. training throughput at the lecture\'s size ({LECTURE}, batch {BATCH}), {steps} steps each')
    fp32, bf16 = peak_gflops(torch.float32), peak_gflops(torch.bfloat16)
    print(f'   matmul peak here: {fp32:.0f} GFLOP/s float32, {bf16:.0f} GFLOP/s bfloat16')
    x = torch.randint(VOCAB, (BATCH, LECTURE['block_size']), device=device)
    torch.manual_seed(0)
    lecture = LectureGPT(**LECTURE).to(device)
    opt = torch.optim.AdamW(lecture.parameters(), lr=3e-4)

    def lecture_step():
        loss = lecture(x, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    base = tokens_per_second(lecture_step, steps)
    del lecture, opt
    script = next((a.split('=', 1)[1] for a in args if a.startswith('--lecture=')), None)
    script_speed = lecture_script_tokens_per_second(script, steps) if script else 'no --lecture=PATH given'

    vars(gpt).update(LECTURE, batch_size=BATCH)
    step = training_step()
    ours = tokens_per_second(step, steps)
    print(f'   lecture-style model (written in bench.py): {base:,.0f} tokens/s; gpt.py {ours / base:.2f}x that')
    if isinstance(script_speed, float):
        print(f'   the lecture\'s own gpt.py ({script}): {script_speed:,.0f} tokens/s; gpt.py {ours / script_speed:.2f}x that')
    else:
        print(f'   the lecture\'s own gpt.py: not run ({script_speed})')
    model = step.model
    matrices = sum(p.numel() for p in model.parameters() if p.ndim == 2) - model.embed.weight.numel()
    T, C, L = LECTURE['block_size'], LECTURE['n_embd'], LECTURE['n_layer']
    flops_per_token = 6 * matrices + 6 * L * T * C  # weights (forward + backward), plus causal attention scores
    achieved = ours * flops_per_token / 1e9
    print(f'   gpt.py ({gpt.dtype}): {ours:,.0f} tokens/s, {achieved:.0f} GFLOP/s of model arithmetic = '
          f'{achieved / bf16:.0%} of the bfloat16 matmul peak ({achieved / fp32:.0%} of float32\'s)')


def part_sampling():
    n = CHARS
    print(f'3. generating {n} characters from a lecture-size model (random weights: the cost is the same)')
    for k, v in LECTURE.items():
        setattr(gpt, k, v)
    torch.manual_seed(0)
    model = gpt_model().to(device).eval()
    prompt = torch.zeros(1, 1, dtype=torch.long, device=device)
    # each way in its fastest precision: the cache as gpt.py samples (float32 on a CPU), the recomputation in
    # bfloat16 (float16's big matrix products are ~7x slower than bfloat16's on this CPU)
    cache_dtype = torch.float32 if device == 'cpu' else torch.bfloat16
    times = {True: [], False: []}
    for rep in range(REPS):  # alternately, REPS times each: this machine's speed drifts by 10-20% over a minute
        for use_cache, dtype in ((True, cache_dtype), (False, torch.bfloat16)):
            t = time.time()
            model.to(dtype).generate(prompt, n, use_cache=use_cache)
            times[use_cache].append(time.time() - t)
            print(f'   {"with" if use_cache else "without"} the KV cache, {str(dtype)[6:]} weights: '
                  f'{times[use_cache][-1]:.1f} s, {n / times[use_cache][-1]:,.0f} characters/s')
    cached, uncached = sorted(times[True])[REPS // 2], sorted(times[False])[REPS // 2]
    print(f'   medians: {cached:.1f} s with the cache, {uncached:.1f} s without: the cache is '
          f'{uncached / cached:.1f}x faster')

AVX2 = {'ONEDNN_MAX_CPU_ISA': 'AVX2', 'ATEN_CPU_CAPABILITY': 'avx2'}  # a CPU without bfloat16 (most laptops)


def part_precision():
    print('4. gpt.py\'s CPU model (its default size), one training step and one sampled character, by precision')
    flags = [a for a in args if a.startswith('--')]  # --device, --smoke
    for name, env in (('this CPU', {}), ('this CPU capped at AVX2, like a CPU without bfloat16', AVX2)):
        print(f'   {name}:', flush=True)  # a fresh process: the caps must be set before torch starts
        subprocess.run([sys.executable, str(HERE / 'bench.py'), 'precision_here', *flags], env={**os.environ, **env})


def median_ms(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[reps // 2] * 1000


def part_precision_here():
    reps = REPS
    chosen, why = gpt.pick_dtype()
    print(f'   gpt.py picks {chosen} ({why})')
    torch.manual_seed(0)
    model = gpt_model()
    x = torch.randint(VOCAB, (gpt.batch_size, gpt.block_size))
    is_matrix = lambda name, p: p.ndim == 2 and name.startswith('blocks')
    step = {}
    for dtype in ('float32', 'bfloat16'):  # (Muon orthogonalises in the precision of training, as gpt.py's)
        opts = [gpt.Muon([p for n, p in model.named_parameters() if is_matrix(n, p)], 0.02, 0.1, getattr(torch, dtype)),
                torch.optim.AdamW([p for n, p in model.named_parameters() if not is_matrix(n, p)], lr=3e-3,
                                  fused=True)]
        def train_step():
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype != 'float32'):
                loss = model(x, x)
            loss.backward()
            for o in opts:
                o.step()
                o.zero_grad(set_to_none=True)
        step[dtype] = median_ms(train_step, reps)
    for dtype in ('float32', 'bfloat16'):
        print(f'   training step ({gpt.batch_size} x {gpt.block_size}), {dtype:>8}: {step[dtype]:7.0f} ms')
    print(f'   the pick is {step[chosen] / min(step.values()):.2f}x the faster of the two')
    model.eval()
    sampled = 'float32'  # as gpt.py samples on a CPU
    for dtype in ('float32', 'float16', 'bfloat16'):
        model.to(getattr(torch, dtype))
        ms = median_ms(lambda: model.generate(x[:1, :1], 20), reps) / 20
        print(f'   sampling, {dtype:>8} weights: {ms:5.2f} ms per character{"  <- gpt.py samples so" * (dtype == sampled)}')


def part_step():
    print(f'8. gpt.py\'s training step at its CPU size ({gpt.n_layer} x {gpt.n_embd}, batch {gpt.batch_size} x '
          f'{gpt.block_size}): its time, where it goes, and its limit (its own matmuls, alone at their shapes)')
    flags = [a for a in args if a.startswith('--')]  # --device, --smoke
    for name, env in (('this CPU', {}), ('this CPU capped at AVX2, like a CPU without bfloat16', AVX2)):
        print(f'   {name}:', flush=True)  # a fresh process: the caps must be set before torch starts
        subprocess.run([sys.executable, str(HERE / 'bench.py'), 'step_here', *flags], env={**os.environ, **env})


def training_step():  # gpt.py's own step (batch, forward, backward, optimizers) on random characters
    gpt.device = device
    gpt.dtype = gpt.pick_dtype()[0]
    torch.manual_seed(0)
    model = gpt_model().to(device)
    run = gpt.Run('', *gpt.make_optimizers(model, gpt.dtype, 0.1), steps=1000)
    run.average = copy.deepcopy(model)
    data = torch.randint(VOCAB, (100_000,), dtype=torch.uint8, device=device)
    amp = torch.autocast(device, dtype=getattr(torch, gpt.dtype), enabled=gpt.dtype != 'float32')
    from torch.profiler import record_function

    def step():  # its parts named for the profiler (bench.py gpu)
        gpt.set_learning_rates(run)
        x, y = gpt.get_batch(data, run.step)
        with record_function('forward and backward'):
            with amp:
                loss = model(x, y)
            run.scaler.scale(loss).backward()
        with record_function('clipping and the optimizers'):
            for opt in run.optimizers:
                run.scaler.unscale_(opt)
            norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
            torch.nn.utils.clip_grads_with_norm_(model.parameters(), 1.0, norm)
            for opt in run.optimizers:
                run.scaler.step(opt)
                opt.zero_grad(set_to_none=True)
            run.scaler.update()
        with record_function('the average'):
            gpt.update_average(run, model)
        run.step += 1
    step.model = model
    return step


MATMULS = ('aten::mm', 'aten::addmm', 'aten::bmm')


def step_profile(step, steps):  # {part: its share of a profiled step}, and the model's matmuls as (op, input shapes, dtypes) per step
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        t = time.perf_counter()
        for _ in range(steps):
            step()
        ms = collections.Counter({'the rest': (time.perf_counter() - t) * 1e6})  # what the parts below leave
    matmuls = []
    for e in prof.events():
        parents = []
        p = e.cpu_parent
        while p is not None:
            parents.append(p.name)
            p = p.cpu_parent
        in_optimizer = any(n.startswith('Optimizer.step') for n in parents)
        if e.name.startswith('Optimizer.step') and not in_optimizer:
            ms['optimizers (Muon, AdamW)'] += e.cpu_time_total
            ms['the rest'] -= e.cpu_time_total
        elif in_optimizer:
            continue
        elif 'scaled_dot_product' in e.name and not any('scaled_dot_product' in n for n in parents):
            ms['fused attention'] += e.cpu_time_total
            ms['the rest'] -= e.cpu_time_total
        elif e.name in MATMULS and not any(n in MATMULS for n in parents):
            ms['the model\'s matmuls (attention\'s included)'] += e.cpu_time_total
            ms['the rest'] -= e.cpu_time_total
            matmuls.append((e.name, tuple(map(tuple, e.input_shapes)), tuple(e.input_dtypes)))
    return {k: v / sum(ms.values()) for k, v in ms.items()}, matmuls[:len(matmuls) // steps]


DTYPES = {'float': torch.float32, 'c10::BFloat16': torch.bfloat16, 'c10::Half': torch.float16}


def matmuls_alone(matmuls, reps):  # ms to run these products one after another, each at its shape and precision
    total = 0.0
    for (op, shapes, dtypes), count in collections.Counter(matmuls).items():
        inputs = [torch.randn(s, dtype=DTYPES[d]) for s, d in zip(shapes, dtypes) if s]  # (addmm: bias, a, b)
        run = getattr(torch, op.removeprefix('aten::'))
        total += count * median_ms(lambda: run(*inputs), max(reps, 20))
    return total


def part_step_here():
    reps = STEP_REPS
    step = training_step()
    for _ in range(3):  # the optimizers' state, the allocator and the matmul kernels settle in the first steps
        step()
    ms = median_ms(step, reps)
    parts, matmuls = step_profile(step, reps)
    limit = matmuls_alone(matmuls, reps)
    print(f'   {gpt.dtype}: {ms:.0f} ms a step (median of {reps}); its {len(matmuls)} matmuls alone at their shapes '
          f'{limit:.0f} ms: step / limit {ms / limit:.2f}')
    order = ("the model's matmuls (attention's included)", 'fused attention', 'optimizers (Muon, AdamW)', 'the rest')
    print('     where a step goes (profiled): ' + ', '.join(f'{name} {parts.get(name, 0):.0%}' for name in order))


def ngram_val_losses(text, block_size, max_order=7, discount=0.75):
    """Interpolated absolute discounting, orders 1 to max_order, scored like gpt.py's final: line: the last 10% of
    the text in non-overlapping windows of block_size, where the first position of a window sees one character."""
    n = int(0.9 * len(text))
    train, val = text[:n], text[n:]
    counts, totals, followers = [], [], []  # per context length k: count(h + c), count(h), distinct c after h
    for k in range(max_order):
        grams = collections.Counter(train[i:i + k + 1] for i in range(len(train) - k))
        total, distinct = collections.Counter(), collections.Counter()
        for gram, c in grams.items():
            total[gram[:-1]] += c
            distinct[gram[:-1]] += 1
        counts.append(grams)
        totals.append(total)
        followers.append(distinct)
    windows, uniform = (len(val) - 1) // block_size, 1 / len(set(text))
    nll = [0.0] * max_order
    for w in range(windows):
        s = val[w * block_size:(w + 1) * block_size + 1]
        for j in range(block_size):
            p = uniform  # order 0
            for k in range(min(max_order, j + 2)):  # order k + 1 reads the last k characters, those in the window
                h = s[j + 1 - k:j + 1]
                if totals[k][h]:  # discount every seen count, and give what it frees to the shorter context
                    p = (max(counts[k][h + s[j + 1]] - discount, 0) + discount * followers[k][h] * p) / totals[k][h]
                nll[k] -= math.log(p)
            for k in range(j + 2, max_order):  # the window holds no more: a longer order predicts the same
                nll[k] -= math.log(p)
    return [x / (windows * block_size) for x in nll]


def synthetic_text(n=300_000, alphabet='abcdefghijklmnopqrstuvwxyz .,;!\n', seed=0):
    """A text whose best possible loss is known: each character either repeats the one 16 places back (half the
    time) or is drawn from a table given the two before it, like a text's local spelling and its longer echoes."""
    rng = random.Random(seed)
    table = {(a, b): [rng.random() ** 4 for _ in alphabet] for a in alphabet for b in alphabet}  # peaked rows
    text = rng.choices(alphabet, k=16)
    for _ in range(n - 16):
        text += [text[-16]] if rng.random() < 0.5 else rng.choices(alphabet, weights=table[text[-2], text[-1]])
    def p(t):  # the true probability of text[t] given everything before it
        row = table[text[t - 2], text[t - 1]]
        return 0.5 * (text[t] == text[t - 16]) + 0.5 * row[alphabet.index(text[t])] / sum(row)
    start = int(0.9 * n)
    best = -sum(math.log(p(t)) for t in range(start + 16, n)) / (n - start - 16)
    return ''.join(text), best


def markov_text(n, alphabet, seed, concentration=0.5):
    """A text from an order-2 Markov chain: each character drawn from a row of probabilities chosen by the two
    before it, each row drawn from a Dirichlet distribution. Returns the text and the best loss any model can
    have on its validation split (the chain's own probabilities)."""
    rng = random.Random(seed)
    table = {}
    for context in itertools.product(alphabet, repeat=2):
        weights = [rng.gammavariate(concentration, 1) for _ in alphabet]  # normalised: a Dirichlet draw
        table[context] = [w / sum(weights) for w in weights]
    cumulative = {context: list(itertools.accumulate(row)) for context, row in table.items()}
    text = rng.choices(alphabet, k=2)
    for _ in range(n - 2):
        text += rng.choices(alphabet, cum_weights=cumulative[text[-2], text[-1]])
    start = int(0.9 * n) + 2
    best = -sum(math.log(table[text[t - 2], text[t - 1]][alphabet.index(text[t])]) for t in range(start, n))
    return ''.join(text), best / (n - start)


def translations(languages, chars, mixed=False):  # the translated messages of the programs here (Debian, Ubuntu)
    """Each language's share in turn, or with mixed=True one message of each language in turn, so that the
    validation split (the last 10%) holds every language too."""
    catalogues = []
    for lang in languages:
        found = []
        for f in sorted(glob.glob(f'/usr/share/locale/{lang}/LC_MESSAGES/*.mo')):
            with open(f, 'rb') as mo:
                try:
                    found += [v for k, v in gettext.GNUTranslations(mo)._catalog.items() if k and isinstance(v, str)]
                except (UnicodeDecodeError, IndexError, ValueError):  # a catalogue gettext cannot read: skipped
                    pass
        catalogues.append(found)
    if mixed:
        return '\n'.join(m for turn in itertools.zip_longest(*catalogues) for m in turn if m)[:chars]
    return '\n'.join('\n'.join(found)[:chars // len(languages)] for found in catalogues)


def panel_texts():
    shakespeare = (HERE / 'input.txt').read_text(encoding='utf-8')
    python = ''.join(Path(f).read_text(encoding='utf-8', errors='replace')
                     for f in sorted(glob.glob(os.path.join(sysconfig.get_paths()['stdlib'], '*.py'))))
    synthetic, best = synthetic_text()
    every_language = sorted(Path(d).name for d in glob.glob('/usr/share/locale/*') if glob.glob(f'{d}/LC_MESSAGES/*.mo'))
    return [('Tiny Shakespeare', shakespeare, ''),
            ('Tiny Shakespeare, first 250,000 characters', shakespeare[:250_000], ''),
            ('Tiny Shakespeare, first 50,000 characters', shakespeare[:50_000], ''),
            ('Python\'s standard library (source), first 2,000,000 characters', python[:2_000_000], ''),
            ('Russian: the translated messages of the programs on this machine', translations(['ru'], 600_000), ''),
            ('Chinese, Japanese, Korean: the same kind of messages', translations(['zh_CN', 'zh_TW', 'ja', 'ko'],
                                                                                  1_200_000), ''),
            ('every language on this machine: the same kind of messages, one of each language in turn',
             translations(every_language, 2_000_000, mixed=True), ''),
            ('synthetic: a character repeats the one 16 back or follows from the two before it', synthetic,
             f'no model can go below {best:.4f}')]


def part_panel():
    print('5. gpt.py with its defaults against the best n-gram model (orders 1 to 7) on the same split and windows')
    print('| text | characters | vocabulary | best n-gram val (order) | gpt.py val | gpt.py wall time |')
    print('|---|---|---|---|---|---|')
    folder = OUT / 'bench_texts'
    folder.mkdir(exist_ok=True)
    for i, (name, text, note) in enumerate(panel_texts()):
        if len(text) < 50_000:
            print(f'| {name} | (not on this machine) |')
            continue
        path = folder / f'text{i}.txt'
        path.write_text(text, encoding='utf-8')
        t = time.time()
        out = subprocess.run([sys.executable, str(HERE / 'gpt.py'), f'--input_file={path}', f'--device={device}',
                              f'--checkpoint={folder / "gpt.pt"}', *GPT_ARGS], capture_output=True, text=True)
        wall = time.time() - t
        chosen = re.search(r' block_size=(\d+) ', out.stdout)  # the n-gram is scored in the same windows
        ngram = ngram_val_losses(text, int(chosen[1]) if chosen else gpt.block_size)
        order = min(range(len(ngram)), key=ngram.__getitem__)
        final = re.search(r'^final: train loss ([\d.]+), val loss ([\d.]+)$', out.stdout, re.M)
        result = final[2] if final else 'failed: ' + (out.stderr.strip().splitlines() or ['?'])[-1]
        print(f'| {name}{" (" + note + ")" if note else ""} | {len(text):,} | {len(set(text)):,} | '
              f'{ngram[order]:.4f} ({order + 1}) | {result} | {wall:.0f} s |', flush=True)


MARKOV = [('25 letters, rows from Dirichlet(0.5), seed 1', 'abcdefghijklmnopqrstuvwxy', 1, 0.5),
          ('40 symbols, rows from Dirichlet(0.3), seed 2 (sparser rows)', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,\n', 2,
           0.3),
          ('30 symbols, rows from Dirichlet(0.5), seed 3 (built after the defaults were chosen)',
           'abcdefghijklmnopqrstuvwxyz.,;\n', 3, 0.5)]
MARKOV_CHARS = 300_000


def part_markov():
    print(f'9. gpt.py\'s defaults on texts of {MARKOV_CHARS:,} characters from an order-2 Markov chain, against the '
          f'best n-gram model and the chain itself')
    print('| text | best possible val | best n-gram val (order) | gpt.py val (train) | gpt.py wall time |')
    print('|---|---|---|---|---|')
    folder = OUT / 'bench_texts'
    folder.mkdir(exist_ok=True)
    for i, (name, alphabet, seed, concentration) in enumerate(MARKOV):
        text, best = markov_text(MARKOV_CHARS, alphabet, seed, concentration)
        path = folder / f'markov{i}.txt'
        path.write_text(text, encoding='utf-8')
        wall, chosen, final = run_gpt([f'--input_file={path}', f'--checkpoint={folder / "gpt.pt"}', *GPT_ARGS])
        losses = re.search(r'train loss ([\d.]+), val loss ([\d.]+)', final)
        window = re.search(r'on (\d+)-character windows', chosen)  # the n-gram is scored in gpt.py's windows
        ngram = ngram_val_losses(text, int(window[1]) if window else gpt.block_size)
        order = min(range(len(ngram)), key=ngram.__getitem__)
        result = f'{losses[2]} ({losses[1]})' if losses else final
        print(f'| {name} | {best:.4f} | {ngram[order]:.4f} ({order + 1}) | {result} | {wall:.0f} s |', flush=True)
    (folder / 'gpt.pt').unlink(missing_ok=True)


def run_gpt(args, env=None):  # python gpt.py as a user runs it: (wall seconds, what it chose, its final line)
    t = time.time()
    out = subprocess.run([sys.executable, str(HERE / 'gpt.py'), f'--device={device}', *args], capture_output=True,
                         text=True, env={**os.environ, **(env or {})})
    wall = time.time() - t
    model, steps = re.search(r'^model (.*)$', out.stdout, re.M), re.search(r'^training (\d+) steps', out.stdout, re.M)
    final = re.search(r'^final: .*$', out.stdout, re.M)
    chosen = f'{model[1]}; {int(steps[1]):,} steps' if model and steps else '?'
    return wall, chosen, final[0] if final else 'failed: ' + (out.stderr.strip().splitlines() or ['?'])[-1]


def part_budget():
    print('6. python gpt.py with its defaults (a 300 s budget) on Tiny Shakespeare, on four machines (the best n-gram'
          ' model: val 1.7008)')
    print('| machine | what gpt.py chose | wall time | final line |')
    print('|---|---|---|---|')
    for name, env in (('this CPU, 2 threads', {'OMP_NUM_THREADS': '2'}),
                      ('this CPU, 1 thread', {'OMP_NUM_THREADS': '1'}),
                      ('capped at AVX2 (no bf16), 2 threads', {**AVX2, 'OMP_NUM_THREADS': '2'}),
                      ('capped at AVX2 (no bf16), 1 thread', {**AVX2, 'OMP_NUM_THREADS': '1'})):
        wall, chosen, final = run_gpt([f'--checkpoint={OUT / "bench_gpt.pt"}', *GPT_ARGS, *TRAIN_ARGS], env)
        print(f'| {name} | {chosen} | {wall:.0f} s | {final} |', flush=True)
    Path(OUT / 'bench_gpt.pt').unlink(missing_ok=True)


def large_text(n):  # n characters of the Python sources on this machine, in a fixed order
    folders = [sysconfig.get_paths()['stdlib'], sysconfig.get_paths()['purelib']]
    files = sorted(f for folder in folders for f in glob.glob(os.path.join(folder, '**', '*.py'), recursive=True))
    pieces, size = [], 0
    for f in files:
        pieces.append(Path(f).read_text(encoding='utf-8', errors='replace'))
        size += len(pieces[-1])
        if size >= n:
            break
    return ''.join(pieces)[:n]


PEAK = ('import atexit, resource, runpy, sys; sys.argv = sys.argv[1:]; atexit.register(lambda: print("peak memory",'
        ' resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "kB", file=sys.stderr)); '
        'runpy.run_path(sys.argv[0], run_name="__main__")')  # gpt.py, reporting its peak memory as it ends


def peak_run(args):  # (wall seconds, peak memory in MB, stdout) of gpt.py run with these arguments
    t = time.time()
    out = subprocess.run([sys.executable, '-c', PEAK, str(HERE / 'gpt.py'), f'--device={device}', *args],
                         capture_output=True, text=True)
    peak = re.search(r'^peak memory (\d+) kB$', out.stderr, re.M)
    return time.time() - t, int(peak[1]) / 1000 if peak else float('nan'), out.stdout + out.stderr[-300:]


def part_large():
    n = LARGE
    print(f'7. a large text: {n:,} characters of the Python sources on this machine')
    folder = OUT / 'bench_texts'
    folder.mkdir(exist_ok=True)
    path = folder / 'large.txt'
    if not path.is_file() or path.stat().st_size < n:
        path.write_text(large_text(n), encoding='utf-8')
    t = time.time()
    chars, data = gpt.read_data(str(path), None)
    took = time.time() - t
    print(f'   reading and encoding in gpt.py: {took:.1f} s, {len(data) / took / 1e6:.0f} million characters a '
          f'second; vocabulary {len(chars):,}, kept as {data.dtype} ({data.element_size()} byte a character)')
    del data
    wall, peak, out = peak_run([f'--input_file={path}', f'--checkpoint={folder / "gpt.pt"}', *GPT_ARGS])
    final = re.search(r'^final: .*$', out, re.M)
    print(f'   python gpt.py --input_file=large.txt: {wall:.0f} s, peak memory {peak:,.0f} MB; '
          f'{final[0] if final else "failed: " + out[-300:]}')
    size = ' '.join(f'--{k}={v}' for k, v in re.findall(r' (n_layer|n_head|n_embd|block_size|batch_size)=(\d+)', out))
    small = folder / 'small.txt'  # its first hundredth
    small.write_text(path.read_text(encoding='utf-8')[:n // 100], encoding='utf-8')
    _, base, _ = peak_run([f'--input_file={small}', f'--checkpoint={folder / "gpt.pt"}', *GPT_ARGS, *size.split(),
                           '--max_iters=20', '--num_chars=10'])
    file_mb = path.stat().st_size / 1e6
    print(f'   the same model on its first {n // 100:,} characters: peak {base:,.0f} MB; the large text adds '
          f'{peak - base:,.0f} MB = {(peak - base) / file_mb:.1f}x the file ({file_mb:,.0f} MB)')
    (folder / 'gpt.pt').unlink(missing_ok=True)

if '--smoke' in args:  # every part at toy sizes, a few seconds each: a check that it runs and prints (the tests')
    LECTURE, BATCH, STEPS, PEAK_N, CHARS, REPS = dict(n_layer=1, n_head=2, n_embd=32, block_size=16), 4, 1, 64, 40, 1
    tiny = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4)
    vars(gpt).update(tiny)  # gpt.py's CPU model, as part 4 times it
    GPT_ARGS = [f'--{k}={v}' for k, v in tiny.items()] + ['--max_iters=4', '--eval_interval=2', '--num_chars=20']
    smoke_dir = tempfile.TemporaryDirectory(prefix='bench_smoke_')  # not beside the real runs' files; removed at exit
    OUT = Path(smoke_dir.name)
    (OUT / 'small.txt').write_text(synthetic_text(20_000)[0], encoding='utf-8')
    TRAIN_ARGS = [f'--input_file={OUT / "small.txt"}']  # instead of Tiny Shakespeare, which may not be here
    panel_texts = lambda: [('synthetic, 50,000 characters', synthetic_text(50_000)[0], '')]  # not eight large texts
    LARGE, STEP_REPS, MARKOV_CHARS = 200_000, 1, 20_000

def part_gpu():
    global device
    device = device if device != 'cpu' or '--smoke' in args or not torch.cuda.is_available() else 'cuda'
    cuda = device.startswith('cuda')
    n = torch.cuda.device_count() if cuda else 2  # (on a CPU: two gloo processes)
    print(f'10. the GPU check on {torch.cuda.get_device_name() if cuda else "the CPU (no GPU)"}, torch '
          f'{torch.__version__}, {n} device(s)')
    ckpt = OUT / 'bench_gpu.pt'
    script = [str(HERE / 'gpt.py'), f'--device={device}', f'--checkpoint={ckpt}', *GPT_ARGS, *TRAIN_ARGS]

    def timed(what, command):  # runs it, prints its wall time and final line, returns (wall, stdout)
        t = time.time()
        out = subprocess.run(command, capture_output=True, text=True)
        wall = time.time() - t
        final = re.search(r'^(final: .*|stopped at step .*)$', out.stdout, re.M)
        last = (out.stdout + out.stderr).strip().splitlines() or ['?']
        print(f'   {what}: {wall:.0f} s, {final[1] if final else "no final line: " + last[-1][:200]}', flush=True)
        return wall, out.stdout
    one, out = timed('python gpt.py (defaults)', [sys.executable, *script])
    model = re.search(r'^model .*$', out, re.M)  # its last step time is the one planned with
    planned = re.findall(r'([\d,]+) ms a step here', model[0] if model else '')[-1:]
    ms = sorted(float(v.replace(',', '')) for v in re.findall(r'\| ([\d,]+) ms/step \|', out)) or [math.nan]
    rate = sorted(float(v.replace(',', '')) for v in re.findall(r'\| ([\d,]+) tokens/s \|', out)) or [math.nan]
    refits = re.findall(r'^step \d+: (.* as it runs .*), to end', out, re.M) or ['never']
    print(f'   planned {planned[0] if planned else "?"} ms a step, ran a median {ms[len(ms) // 2]:,.0f} ms/step, '
          f'{rate[len(rate) // 2]:,.0f} tokens/s; refitted: {refits[-1]}')
    several, _ = timed(f'torchrun, {n} processes', [sys.executable, '-m', 'torch.distributed.run', '--standalone',
                                                    f'--nproc_per_node={n}', *script])
    print(f'   {n} processes took {several / one:.2f}x the wall time of one')
    steps = ['--max_iters=60', '--eval_interval=30'] if '--smoke' not in args else ['--max_iters=8', '--eval_interval=4']
    half = f'--stop_after={steps[1].split("=")[1]}'
    timed('float32, stopped halfway', [sys.executable, *script, *steps, '--dtype=float32', half])
    timed('resumed in float16', [sys.executable, *script, *steps, '--dtype=float16', '--resume=True'])
    t = time.time()
    out = subprocess.run([sys.executable, *script, '--sample_only=True', '--num_chars=200'], capture_output=True,
                         text=True)
    print(f'   --sample_only=True: {time.time() - t:.0f} s, exit status {out.returncode}, '
          f'{len(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else 0} characters on its last line')
    ckpt.unlink(missing_ok=True)
    ckpt.with_suffix('.csv').unlink(missing_ok=True)
    from torch.profiler import profile, ProfilerActivity
    if cuda and '--smoke' not in args:  # the lecture's size, as a GPU trains it
        vars(gpt).update(dict(zip(SIZE_NAMES, gpt.SIZES[-1])))
    step = training_step()
    for _ in range(3):
        step()
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda
    with profile(activities=activities) as prof:
        t = time.perf_counter()
        for _ in range(10):
            step()
        torch.cuda.synchronize() if cuda else None
        wall = (time.perf_counter() - t) * 1000
    events = prof.key_averages()
    kernels = sum(e.self_device_time_total for e in events) if cuda else sum(e.self_cpu_time_total for e in events)
    print(f'   profile of 10 training steps: kernels {kernels / 1000:,.1f} ms of {wall:,.1f} ms wall '
          f'({kernels / 1000 / wall:.0%}; {"GPU kernels" if cuda else "CPU operators"})')
    # what each part of a step launches, and what that costs the device and the host: where a GPU's step goes
    def launched(e):  # kernels on a GPU (each op's, its children's), operators on a CPU
        return len(e.kernels) + sum(map(launched, e.cpu_children)) if cuda else len(e.cpu_children)
    for part in ('forward and backward', 'clipping and the optimizers', 'Optimizer.step#Muon', 'the average'):
        found = [e for e in prof.events() if e.name.startswith(part)]  # (10 steps' worth)
        device_ms = sum(e.device_time_total if cuda else e.cpu_time_total for e in found) / 1000 / 10
        host_ms = sum(e.cpu_time_total for e in found) / 1000 / 10
        count = sum(map(launched, found)) / max(1, len(found))
        name = f"Muon's step ({len(list(step.model.blocks.parameters()))} matrices)" if 'Muon' in part else part
        print(f'   {name}: {count:,.0f} {"kernels" if cuda else "operators"}, {device_ms:,.2f} ms of them, '
              f'{host_ms:,.2f} ms on the host, in a step of {wall / 10:,.2f} ms')


def plot(paths):  # each log (gpt.py's CSV) drawn as a PNG beside it
    try:
        import matplotlib
        matplotlib.use('Agg')  # (no screen needed)
        import matplotlib.pyplot as plt
    except ImportError:
        print('error: drawing a log needs matplotlib, which gpt.py does not: pip install matplotlib', file=sys.stderr)
        sys.exit(2)
    references = [a.split('=', 1)[1].partition(':')[::2] for a in args if a.startswith('--reference=')]
    if not paths or not all(re.fullmatch(r'\d+(\.\d*)?', value) for value, _ in references):
        print('error: python bench.py plot LOG.csv [--reference=LOSS:NAME]', file=sys.stderr)
        sys.exit(2)
    for path in map(Path, paths):
        try:
            with open(path, newline='', encoding='utf-8') as f:
                rows = list(csv.DictReader(f))
            train = [(int(r['step']), float(r['train_loss'])) for r in rows  # (the final row's, over
                     if r['train_loss'] and not r['val_loss']]  # a stretch of the text, is another measure)
            val = [(int(r['step']), float(r['val_loss'])) for r in rows if r['val_loss']]
        except (OSError, KeyError, ValueError) as e:
            print(f'error: {path} is not a log that gpt.py wrote ({e})', file=sys.stderr)
            sys.exit(2)
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        ax.plot(*zip(*train), label='train loss (at progress lines)', color='tab:blue', linewidth=1)
        if val:
            ax.plot(*zip(*val), 'o-', label='val loss (whole split)', color='tab:orange', markersize=3)
            best = min(val, key=lambda sv: sv[1])
            ax.plot(*best, '*', color='tab:red', markersize=12, label=f'best: {best[1]:.4f} at step {best[0]}')
        for value, name in references:
            ax.axhline(float(value), linestyle='--', color='gray', linewidth=1)
            ax.text(0.01, float(value), f'{name} {value}', transform=ax.get_yaxis_transform(), fontsize=8,
                    color='gray', va='bottom')
        ax.set(xlabel='step', ylabel='loss (nats per character)', title=path.name)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out = path.with_suffix('.png')
        fig.savefig(out)
        print(f'drew {out}')


PARTS = {'train': part_train, 'throughput': part_throughput, 'sampling': part_sampling, 'precision': part_precision,
         'precision_here': part_precision_here, 'step': part_step, 'step_here': part_step_here, 'panel': part_panel,
         'budget': part_budget, 'large': part_large, 'markov': part_markov, 'gpu': part_gpu}
if parts[:1] == ['plot']:
    plot(parts[1:])
    parts = []
if set(parts) - set(PARTS):
    print(f'error: no part {sorted(set(parts) - set(PARTS))[0]!r}; the parts: plot, {", ".join(PARTS)}', file=sys.stderr)
    sys.exit(2)
for part in parts:
    PARTS[part]()
