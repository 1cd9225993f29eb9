"""The mathematical trick in self-attention, step by step: each token may only look at itself and
the past, and averaging over that past is one matrix multiplication. Every equivalence is checked;
the script exits with status 1 if any check fails.

    python attention_trick.py
"""
import sys, warnings
warnings.filterwarnings('ignore', message='Failed to initialize NumPy')  # torch runs without numpy
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(1337)
B, T, C = 4, 8, 32  # batch, time (sequence length), channels
x = torch.randn(B, T, C)
failed = []


def check(name, ok):
    print(f'  check {"passed" if ok else "FAILED"}: {name}')
    if not ok:
        failed.append(name)


# 1. The simplest way for a token to talk to its past: average its own vector with all earlier ones.
#    Two explicit loops; xbow[b, t] is the mean of x[b, 0..t] ("bag of words").
print('1. average of the past with explicit loops')
xbow = torch.zeros(B, T, C)
for b in range(B):
    for t in range(T):
        xbow[b, t] = x[b, :t + 1].mean(dim=0)
print('  x[0]\'s first channel   ', [round(v, 3) for v in x[0, :, 0].tolist()])
print('  xbow[0]\'s first channel', [round(v, 3) for v in xbow[0, :, 0].tolist()])

# 2. The same as one matrix multiplication: row t of a lower-triangular matrix holds 1/(t+1) in its
#    first t+1 columns, so multiplying by it averages the past. (T, T) @ (B, T, C) broadcasts over
#    the batch.
print('2. the same with a lower-triangular weight matrix and one batched matmul')
wei = torch.tril(torch.ones(T, T))
wei = wei / wei.sum(dim=1, keepdim=True)
print('  weights:\n' + '\n'.join('   ' + ' '.join(f'{w:.2f}' for w in row) for row in wei.tolist()))
check('tril matmul == loops', torch.allclose(wei @ x, xbow, atol=1e-5))

# 3. The same through softmax: start from zero affinities, set the future to -inf, softmax each row.
#    -inf becomes weight 0 and the equal zeros become equal weights. This is the form attention
#    uses, because the zeros can be replaced by affinities that depend on the data.
print('3. the same with masked_fill(-inf) and softmax')
tril = torch.tril(torch.ones(T, T))
wei = torch.zeros(T, T).masked_fill(tril == 0, float('-inf'))
wei = F.softmax(wei, dim=-1)
check('softmax of masked zeros == loops', torch.allclose(wei @ x, xbow, atol=1e-5))

# 4. Self-attention: every token emits a query (what am I looking for?) and a key (what do I
#    contain?). Their dot product is the affinity; the token passes on its value (what I will tell
#    you if you look).
print('4. one head of self-attention with key, query and value')
head_size = 16
key, query, value = (nn.Linear(C, head_size, bias=False) for _ in range(3))
k, q, v = key(x), query(x), value(x)  # each (B, T, head_size)
wei = q @ k.transpose(-2, -1) * head_size ** -0.5  # (B, T, T); step 5 says why the scale
wei = F.softmax(wei.masked_fill(tril == 0, float('-inf')), dim=-1)
out = wei @ v  # (B, T, head_size)
print('  weights of the first sequence (row t: what token t takes from itself and those before):')
print('\n'.join('   ' + ' '.join(f'{w:.2f}' for w in row) for row in wei[0].tolist()))
check('every row of weights sums to 1', torch.allclose(wei.sum(-1), torch.ones(B, T), atol=1e-5))
check('no weight on the future', bool((wei[:, tril == 0] == 0).all()))  # (B, 28); step 6: the rest

# 5. Why scale by head_size**-0.5: with unit-variance q and k (drawn so below; nn.Linear's default
#    start gives smaller ones), q.k sums head_size products, so its variance is head_size. Large
#    scores make softmax nearly one-hot (each token listens to a single one); the scale keeps the
#    variance near 1 whatever head_size is, so that attention starts spread out.
print('5. why the scores are scaled by head_size**-0.5')
qs, ks = torch.randn(1000, T, head_size), torch.randn(1000, T, head_size)  # (many, to measure)
raw = qs @ ks.transpose(-2, -1)
scaled = raw * head_size ** -0.5
print(f'  variance of q.k: unscaled {raw.var():.2f} (about head_size = {head_size}), '
      f'scaled {scaled.var():.2f}')
scores = torch.tensor([0.1, -0.2, 0.3, -0.2, 0.5])
print(f'  softmax of small scores     {[round(p, 3) for p in F.softmax(scores, -1).tolist()]}')
print(f'  the same scores times 8     {[round(p, 3) for p in F.softmax(scores * 8, -1).tolist()]}')
peak_raw, peak_scaled = F.softmax(raw, -1).amax(-1).mean(), F.softmax(scaled, -1).amax(-1).mean()
print(f'  mean largest weight per row: unscaled {peak_raw:.2f}, scaled {peak_scaled:.2f}')
check('scaling brings the variance near 1 and softens the softmax',
      0.9 < scaled.var() < 1.1 and peak_raw > peak_scaled)

# 6. PyTorch fuses all of step 4 (scale, causal mask, softmax, weighted sum) into one call. Given
#    (B, heads, T, head_size), its fused kernels never build the (T, T) matrix in memory; these 3-D
#    inputs take its plain path, the same arithmetic.
print('6. the same head with F.scaled_dot_product_attention(..., is_causal=True)')
fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
check('scaled_dot_product_attention == the head by hand', torch.allclose(fused, out, atol=1e-5))

print(f'{"all checks passed" if not failed else "FAILED: " + ", ".join(failed)}')
if failed:  # (a notebook cell that passed ends without an exit)
    sys.exit(1)
