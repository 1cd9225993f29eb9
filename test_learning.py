"""What the GPT learns, and what lets it learn: tests of the model's behaviour rather than of the plumbing.

The loss starts at a uniform guess; no position sees the characters after it; one batch can be learned by heart
with gpt.py's own optimizers; every weight gets its intended learning rate; the validation loss is the mean it
claims to be; sampling draws from the distribution that temperature and top_k describe; and rotary positions, the
pair table and QK-norm each have a test that fails without them. The models are tiny (2 layers of width 32, windows of 16
characters), so that the whole file runs in seconds on one CPU thread.
"""
import copy, math, sys
import pytest
import torch
import torch.nn.functional as F
from test_smoke import ROOT, train_in_process

sys.path.insert(0, str(ROOT))
import gpt  # noqa: E402

VOCAB = 65  # Tiny Shakespeare's
T = 16  # the tiny model's block_size
CONFIG = gpt.Config(vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32, block_size=T, pair_rows=gpt.pair_rows,
                    dropout=0.0)


def tiny(**changes):  # the tiny model, with these changes to its shape
    return gpt.GPT(CONFIG._replace(**changes))


@pytest.fixture(autouse=True)
def tiny_settings(monkeypatch):
    """Every test runs on the CPU, from seed 0, with the tiny model's windows; a test changes more on top."""
    for name, value in dict(block_size=T, device='cpu').items():
        monkeypatch.setattr(gpt, name, value)
    torch.manual_seed(0)


# ---------------------------------------------------------------------- before training
def test_the_loss_at_initialisation_is_a_uniform_guess():
    # the small initial weights give near-equal logits: the model starts knowing nothing, and is not
    # confidently wrong about anything (that would start the loss well above ln(vocab))
    model = tiny()
    xy = torch.randint(VOCAB, (8, T + 1))
    with torch.no_grad():
        loss = model(xy[:, :-1], xy[:, 1:]).item()
    assert abs(loss - math.log(VOCAB)) < 0.1, loss


@pytest.mark.parametrize('precision', ['training', 'bfloat16', 'sampling'])
def test_no_position_sees_the_characters_after_it(precision):
    model = tiny().train()  # dropout is 0, so training mode is deterministic too
    if precision == 'sampling':
        model.eval().to(torch.float16)  # a half-precision model on a CPU: attention in float32
    idx = torch.randint(VOCAB, (4, T))
    changed = idx.clone()
    changed[:, 10:] = (idx[:, 10:] + 1) % VOCAB  # every character from position 10 on replaced by another
    # bfloat16 autocast on a CPU: gpt.py's explicit attention (the masked softmax), not the fused kernel
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=precision == 'bfloat16'):
        before, after = model(idx), model(changed)
    assert torch.equal(before[:, :10], after[:, :10])  # positions 0-9 cannot tell, to the last bit
    assert (before[:, 10:] != after[:, 10:]).any(-1).all()  # while each later one does (so the test can fail)


@pytest.mark.parametrize('T, S', [(16, 16), (1, 16), (4, 16)])  # a window; a cached one, one query or a few more
def test_the_cpus_attention_is_the_fused_one(T, S):
    # the CPU's path (the lecture's masked softmax) must compute what scaled_dot_product_attention does:
    # each query sees the keys up to its own position, the last T of S
    queries, k, v = torch.randn(2, 3, S, 8), torch.randn(2, 3, S, 8), torch.randn(2, 3, S, 8)
    every = F.scaled_dot_product_attention(queries, k, v, is_causal=True)  # all S queries at once
    assert torch.allclose(gpt.attention(queries[:, :, -T:], k, v, 0.0), every[:, :, -T:], atol=1e-6)


# ---------------------------------------------------------------------- training
def test_one_batch_can_be_learned_by_heart(monkeypatch):
    # random characters hold nothing to generalise: a loss near zero means the model memorised them, which it
    # can only do if the gradients reach every layer and gpt.py's optimizers and schedule turn them into steps
    monkeypatch.setattr(gpt, 'warmup_iters', 10)
    monkeypatch.setattr(gpt, 'max_iters', 200)
    model = tiny(pair_rows=0)  # (a pair table could learn the pairs of 64 characters alone)
    xy = torch.randint(VOCAB, (4, T + 1))
    before = copy.deepcopy(model.blocks)
    run = gpt.Run('', *gpt.make_optimizers(model, 'float32', 0.0), steps=200)
    while run.step < run.steps:  # as gpt.train does, on the same batch every time
        gpt.set_learning_rates(run)
        gpt.optimizer_step(model, run, model(xy[:, :-1], xy[:, 1:]))
        run.step += 1
    with torch.no_grad():
        loss = model(xy[:, :-1], xy[:, 1:]).item()
    assert loss < 0.1, loss  # from ln(65) = 4.17
    assert all(not torch.equal(a, b) for a, b in zip(before.parameters(), model.blocks.parameters()))


def test_every_weight_is_in_one_optimizer_at_its_own_rate(monkeypatch):
    for name, value in dict(warmup_iters=100, max_iters=1000, muon_lr=0.02, embed_lr=0.1, pair_lr=0.005,
                            lr=0.003).items():
        monkeypatch.setattr(gpt, name, value)
    model = tiny()
    run = gpt.Run('', *gpt.make_optimizers(model, 'float32', 0.0), steps=1000)
    muon = run.optimizers[0]
    held = [id(p) for opt in run.optimizers for group in opt.param_groups for p in group['params']]
    assert sorted(held) == sorted(id(p) for p in model.parameters())  # each weight once, none left out
    # Muon orthogonalises whole matrices: the blocks' ones, not the embedding table, nor the output head
    in_muon = {id(p) for p in muon.param_groups[0]['params']}
    assert in_muon == {id(p) for p in model.blocks.parameters() if p.ndim == 2}
    assert id(model.embed.weight) not in in_muon and id(model.head.weight) not in in_muon

    def rate_of(weight):
        return next(group['lr'] for opt in run.optimizers for group in opt.param_groups
                    if any(p is weight for p in group['params']))
    # warm-up: step s runs at (s + 1) / 101 of the peak, up to the peak at step 100; then down in a straight line
    # to zero at step 1000, so halfway (step 550) at half the peak and at the last step (999) at 1/900 of it
    for step, fraction in [(0, 1 / 101), (100, 1.0), (550, 0.5), (999, 1 / 900)]:
        run.step = step
        gpt.set_learning_rates(run)
        assert rate_of(model.blocks[1].mlp.down.weight) == pytest.approx(0.02 * fraction), step
        assert rate_of(model.embed.weight) == pytest.approx(0.1 * fraction), step
        assert rate_of(model.pairs.weight) == pytest.approx(0.005 * fraction), step
        assert rate_of(model.head.weight) == pytest.approx(0.003 * fraction), step


def test_each_pass_reads_every_window_once(monkeypatch):
    # a pass reads the text's windows end to end from an offset of its own, each once, in an order of its own;
    # a step's batch depends on the step alone (a resumed run reads what the stopped one would have)
    monkeypatch.setattr(gpt, 'block_size', 8)
    monkeypatch.setattr(gpt, 'batch_size', 5)
    data = torch.arange(1001)  # each window's first character is where it starts
    n = (len(data) - 1) // 8 - 1  # windows in a pass: 124
    starts = torch.cat([gpt.get_batch(data, step)[0][:, 0] for step in range(4 * n // 5)]).tolist()
    passes = [starts[k * n:(k + 1) * n] for k in range(3)]  # (and a fourth begun)
    offsets, orders = [one[0] % 8 for one in passes], [[start // 8 for start in one] for one in passes]
    for one, offset in zip(passes, offsets):
        assert sorted(one) == [offset + 8 * k for k in range(n)]  # every window once
    assert orders[0] != sorted(orders[0]) and orders[1] != orders[0]  # shuffled, each pass anew
    assert len(set(offsets)) > 1  # (where the windows' edges fall)
    gpt.pass_starts.cache_clear()  # (nothing kept from the steps before)
    assert gpt.get_batch(data, 7)[0][:, 0].tolist() == starts[35:40]


# ---------------------------------------------------------------------- evaluation
def test_split_loss_is_the_mean_cross_entropy_over_its_windows(monkeypatch):
    monkeypatch.setattr(gpt, 'block_size', 8)
    monkeypatch.setattr(gpt, 'dtype', 'float32')
    monkeypatch.setattr(gpt, 'batch_size', 64)  # (it reads batch_size windows at a time, as training)
    model = tiny(dropout=0.5)  # split_loss must turn it off itself
    torch.nn.init.normal_(model.head.weight, std=1.0)  # confident logits: the windows' losses differ widely
    # 70 windows of 8 and 5 characters to spare: a full batch of 64 windows, a partial one of 6, and a remainder
    # too short for a window, which is not scored
    data = torch.randint(VOCAB, (70 * 8 + 1 + 5,))
    model.eval()
    losses = []
    with torch.no_grad():
        for start in range(0, 70 * 8, 8):  # one window at a time
            window = data[start:start + 9]  # 8 characters, and each one's next
            losses.append(F.cross_entropy(model(window[None, :-1])[0], window[1:]).item())
    model.train()
    assert gpt.split_loss(model, data) == pytest.approx(sum(losses) / 70, rel=1e-5)
    assert model.training  # and it leaves the model training
    monkeypatch.setattr(gpt, 'eval_chars', 24)  # past eval_chars: that many, in 3 windows evenly spread
    assert gpt.split_loss(model, data) == pytest.approx((losses[0] + losses[34] + losses[69]) / 3, rel=1e-5)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])  # (bfloat16: the CPU's explicit attention)
def test_eval_mode_turns_dropout_off(monkeypatch, dtype):
    model = tiny(dropout=0.5)
    idx = torch.randint(VOCAB, (2, T))
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype, enabled=dtype != torch.float32):
        model.eval()
        assert torch.equal(model(idx), model(idx))
        model.train()
        assert not torch.allclose(model(idx), model(idx))  # training mode drops a different half each time


@pytest.mark.parametrize('p', [0.1, 0.3, 0.99, 0.999])
def test_dropout_zeroes_its_share_and_keeps_the_mean(monkeypatch, p):
    x = torch.ones(1_000_000)
    dropped = gpt.drop(x, p)
    assert abs((dropped == 0).float().mean() - p) < 0.005  # (a CPU's p is in 256ths)
    assert abs(dropped.mean() - 1) < 5 * (p / (1 - p) / len(x)) ** 0.5  # about 5 standard errors
    assert len(dropped.unique()) == 2  # 0, and the rest scaled alike
    assert gpt.drop(x, 0.0) is x


@pytest.mark.parametrize('p', [0.0, 0.3])
def test_training_replaces_its_share_of_the_input_characters(p, monkeypatch, tmp_path):
    # a text seen many times is harder to learn by heart where some characters are replaced at random: in the
    # inputs only, so each window's input, one character on, still matches its targets except where replaced
    seen, put, forward = [], set(), gpt.GPT.forward
    def record(model, idx, targets=None, **kwargs):
        if model.training:
            replaced = idx[:, 1:] != targets[:, :-1]
            seen.append(replaced.float().mean())
            put.update(idx[:, 1:][replaced].tolist())
        return forward(model, idx, targets, **kwargs)
    monkeypatch.setattr(gpt.GPT, 'forward', record)
    train_in_process(monkeypatch, tmp_path, input_noise=p, max_iters=50)
    # replaced by one of the 12 characters: another with probability 11/12 (about 4 standard errors)
    assert len(seen) == 50 and abs(sum(seen) / 50 - p * 11 / 12) < 0.05
    assert len(put) == (12 if p else 0)  # any of them, at random


# ---------------------------------------------------------------------- sampling
def test_temperature_zero_takes_the_likeliest(monkeypatch):
    logits = torch.randn(100, VOCAB)
    assert torch.equal(gpt.pick_next(logits, 0.0, 0)[:, 0], logits.argmax(-1))


def test_a_tiny_temperature_is_nearly_greedy_and_never_fails(monkeypatch):
    logits = torch.randn(100, VOCAB)  # logits / 1e-38 overflow to inf, and softmax(inf) is nan
    assert torch.equal(gpt.pick_next(logits, 1e-38, 0)[:, 0], logits.argmax(-1))
    assert torch.equal(gpt.pick_next(logits, 1e-300, 0)[:, 0], logits.argmax(-1))  # float32's 0: 0 / 0


def test_top_k_picks_only_among_the_k_likeliest(monkeypatch):
    logits = torch.tensor([1.0, 0.5, 2.0, 0.0, 1.5, 0.8])  # the likeliest three: 2, 4 and 0
    picks = gpt.pick_next(logits.expand(10_000, -1), 1.0, 3)  # 10,000 draws at once, one per row
    assert set(picks.unique().tolist()) == {0, 2, 4}  # each of them, and nothing else


@pytest.mark.parametrize('temperature', [1.0, 0.5])
def test_draws_follow_the_softmax_of_logits_over_temperature(temperature, monkeypatch):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    n = 20_000
    frequencies = torch.bincount(gpt.pick_next(logits.expand(n, -1), temperature, 0)[:, 0], minlength=5) / n
    p = F.softmax(logits / temperature, dim=-1)  # T = 0.5 sharpens: 0.56 at temperature 1, 0.83 here
    # each frequency within 4 standard errors of its probability (the draws are seeded: this is no flaky test)
    assert ((frequencies - p).abs() <= 4 * (p * (1 - p) / n).sqrt()).all(), (frequencies, p)


# ---------------------------------------------------------------------- rotary positions
def test_rotate_turns_each_channel_pair_by_its_angle():
    # a head of 4 channels: channel 0 pairs with channel 2, and 1 with 3 (the first half with the second)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    cos, sin = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])  # the first pair by 90 degrees, the second by 0
    assert torch.equal(gpt.rotate(x, cos, sin), torch.tensor([-3.0, 2.0, 1.0, 4.0]))  # (1, 3) turned to (-3, 1)


def test_the_logits_depend_on_relative_positions_only():
    # a query and a key turn by angles that grow with their positions, so their product depends only on how far
    # apart they are: the same characters give the same logits wherever they stand (what lets the KV cache and
    # generate's sliding window number positions as they do)
    model = tiny().eval()
    idx = torch.randint(VOCAB, (2, T))
    with torch.no_grad():
        assert torch.allclose(model(idx), model(idx, start=1000), atol=1e-5)


def test_the_order_of_earlier_characters_matters(monkeypatch):
    # Without positions, attention is a weighted sum over the set of earlier keys and values: in a one-layer model,
    # reversing the characters before the last one would leave the last one's logits as they were (to 2e-8, float
    # rounding, measured). Rotary positions are the model's only sense of order. (With two layers the first layer's
    # outputs would already differ, and the test could not tell.)
    # (without the pair table, which would see the changed character before the last)
    model = tiny(n_layer=1, pair_rows=0).eval()
    idx = torch.randint(VOCAB, (1, T))
    reversed_before = torch.cat((idx[:, :-1].flip(1), idx[:, -1:]), dim=1)
    with torch.no_grad():
        change = (model(idx)[0, -1] - model(reversed_before)[0, -1]).abs().max()
    assert change > 1e-5, change  # 0.035 measured (3e-4 with QK-norm taken out: this test is about order only)


# ---------------------------------------------------------------------- the pair table
def without_attention(model):  # each position's logits from its own embeddings alone: no position sees another
    for block in model.blocks:
        block.attn.proj.weight.zero_()
    return model


@torch.no_grad()
def test_the_pair_table_gives_each_position_the_character_before_it(monkeypatch):
    model = without_attention(tiny().eval())
    a, b = torch.tensor([[1, 5, 7]]), torch.tensor([[2, 5, 7]])  # differ in the first character only
    assert (model(a)[0, 1] - model(b)[0, 1]).abs().max() > 1e-3  # the second position sees it (0.07 measured)
    assert torch.allclose(model(a)[0, 2], model(b)[0, 2])  # the third sees only the second, the same in both
    # a window's first character has none before it, as in training, unless told which (as the KV cache is)
    assert torch.allclose(model(a[:, 1:])[0, 0], model(b[:, 1:])[0, 0])
    assert torch.allclose(model(a[:, 1:], before=a[:, :1])[0, 0], model(a)[0, 1], atol=1e-6)
    model = without_attention(tiny(pair_rows=0).eval())  # without the table, nothing else carries it
    assert torch.allclose(model(a)[0, 1], model(b)[0, 1])


def test_a_large_vocabulary_shares_the_pair_tables_rows():
    model = tiny(vocab_size=3000)  # 9 million pairs (CJK texts have thousands of characters)
    assert model.pairs.num_embeddings == CONFIG.pair_rows < 3001 * 3000
    idx = torch.randint(3000, (2, T))
    assert model(idx, idx).isfinite()  # every pair has a row


# ---------------------------------------------------------------------- QK-norm
def test_qk_norm_undoes_any_scale_of_the_queries_and_keys():
    # each head's queries and keys are normed before their product, so weights that make them 10 times larger
    # change nothing; without the norm the attention scores would grow 100-fold (the logits moved by 0.1, measured)
    model = tiny().eval()
    idx = torch.randint(VOCAB, (2, T))
    with torch.no_grad():
        before = model(idx)
        for block in model.blocks:
            block.attn.qkv.weight[:2 * CONFIG.n_embd] *= 10  # the rows that make the queries and the keys
        after = model(idx)
    assert torch.allclose(before, after, atol=1e-3), (before - after).abs().max()  # 7e-5 measured (layer_norm's eps)


@pytest.mark.parametrize('precision', ['bfloat16', 'float32'])
def test_muon_steps_as_torchs_muon_in_the_precision_asked(precision, monkeypatch):
    # torch.optim.Muon orthogonalises one matrix at a time, in bfloat16 always (emulated ~15x slower on most laptops'
    # CPUs); gpt.py's Muon does its arithmetic for all matrices of a shape at once, in the precision asked: it agrees
    # with torch's in bfloat16, and in float32 with torch's iteration run in float32 (its private function swapped,
    # here only), each far closer than the two precisions are to each other.
    if precision == 'float32':
        def in_float32(grad, ns_coefficients, ns_steps, eps):
            x = grad.T if grad.size(0) > grad.size(1) else grad
            x = x / x.norm().clamp(min=eps)
            a, b, c = ns_coefficients
            for _ in range(ns_steps):
                gram = x @ x.T
                x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
            return x.T if grad.size(0) > grad.size(1) else x
        monkeypatch.setattr(torch.optim._muon, '_zeropower_via_newtonschulz', in_float32)
    shapes = ((48, 96), (96, 48), (48, 96), (32, 32))  # (two of one shape: orthogonalised together)
    ours = [torch.nn.Parameter(torch.randn(*shape) * 0.02) for shape in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    mine = gpt.Muon(ours, 0.02, 0.3, getattr(torch, precision))  # (weight decay as torch's)
    torchs = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.3, ns_steps=3)
    tolerance = 1e-5  # (steps of about 1e-3 a weight; bfloat16 against float32 differ by 1e-4 and more)
    for _ in range(3):  # (the momentum too)
        for a, b in zip(ours, theirs):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        before = [p.detach().clone() for p in ours]
        mine.step()
        torchs.step()
        for a, b, start in zip(ours, theirs, before):
            assert not torch.equal(a, start)
            assert (a - b).abs().max() < tolerance, (a - b).abs().max()
