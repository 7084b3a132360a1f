"""The shared delta update: it is the gradient of ½‖θ − θ̃‖² through the hypernet."""

from __future__ import annotations

import torch

from common.hypernets.pertensor import PerTensorHyperNet
from server.store import EmbeddingStore
from server.update import backprop_deltas, hypernet_step, round_weights, undiluted

SHAPES = {"fc.weight": torch.Size([3, 4]), "fc.bias": torch.Size([3])}


def make(seed: int = 0):
    torch.manual_seed(seed)
    store = EmbeddingStore(5, 4, seed=seed)
    for i in range(5):
        store.add(str(i))
    return store, PerTensorHyperNet(4, SHAPES, hidden=8, n_hidden=1)


def test_backprop_equals_gradient_of_half_squared_distance():
    store, hnet = make()
    ids = ["1", "3"]
    targets = [{k: torch.randn(s) for k, s in SHAPES.items()} for _ in ids]
    weights = round_weights([10, 30], "samples")

    theta = hnet(store(ids))
    deltas = [
        {k: targets[i][k] - theta[k][i].detach() for k in SHAPES}
        for i in range(len(ids))
    ]
    backprop_deltas(theta, deltas, weights)
    ours = [p.grad.clone() for p in [*hnet.parameters(), store.weight]]

    hnet.zero_grad(), store.zero_grad()
    theta = hnet(store(ids))
    loss = sum(
        weights[i]
        * 0.5
        * sum(((theta[k][i] - targets[i][k]) ** 2).sum() for k in SHAPES)
        for i in range(len(ids))
    )
    loss.backward()
    reference = [p.grad for p in [*hnet.parameters(), store.weight]]
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b)
    # only the sampled clients' embeddings receive gradient
    assert store.weight.grad[[0, 2, 4]].abs().sum() == 0


def test_step_moves_hypernet_toward_client_models():
    store, hnet = make()
    params = [*hnet.parameters(), store.weight]
    opt = torch.optim.SGD(params, lr=0.05)
    target = {k: torch.ones(s) for k, s in SHAPES.items()}
    before = [p.detach().clone() for p in params]

    def distance() -> float:
        with torch.no_grad():
            theta = hnet(store(["2"]))
        return sum(float(((theta[k][0] - target[k]) ** 2).sum()) for k in SHAPES)

    start = distance()
    for _ in range(20):
        with torch.no_grad():
            theta = hnet(store(["2"]))
        delta = {k: target[k] - theta[k][0] for k in SHAPES}
        hypernet_step(hnet, store(["2"]), [delta], torch.ones(1), opt, params, 50.0)
    assert distance() < 0.5 * start
    assert any(not torch.equal(a, b) for a, b in zip(before, params, strict=True))


def test_round_weights():
    assert torch.allclose(round_weights([1, 3], "uniform"), torch.tensor([0.5, 0.5]))
    assert torch.allclose(round_weights([1, 3], "samples"), torch.tensor([0.25, 0.75]))


def test_flat_vectors_of_different_lengths_follow_the_same_rule():
    """Clients with models of their own sizes: θ_i is a flat vector of length K_i
    (cut from one generated vector), Δ_i too; still ∇ of Σ w_i ½‖θ_i − θ̃_i‖²."""
    torch.manual_seed(1)
    head = torch.nn.Linear(4, 40)
    v = torch.randn(2, 4, requires_grad=True)
    lengths = [15, 40]
    targets = [torch.randn(k) for k in lengths]
    weights = round_weights([1, 1], "uniform")

    def generate(emb):
        out = head(emb)
        return [out[i, :k] for i, k in enumerate(lengths)]

    theta = generate(v)
    backprop_deltas(
        theta, [t - th.detach() for t, th in zip(targets, theta, strict=True)], weights
    )
    ours = [p.grad.clone() for p in (*head.parameters(), v)]
    head.zero_grad()
    v.grad = None
    loss = sum(
        w * 0.5 * ((th - t) ** 2).sum()
        for w, th, t in zip(weights, generate(v), targets, strict=True)
    )
    loss.backward()
    for a, b in zip(ours, [p.grad for p in (*head.parameters(), v)], strict=True):
        torch.testing.assert_close(a, b)


def test_grad_hook_runs_before_the_step_and_can_freeze_weights():
    store, hnet = make()
    frozen = next(hnet.parameters())
    before = frozen.detach().clone()
    opt = torch.optim.SGD([*hnet.parameters(), store.weight], lr=0.5)
    theta = hnet(store(["0"]))
    deltas = [{k: torch.ones_like(v[0]) for k, v in theta.items()}]

    def freeze():
        frozen.grad = None

    hypernet_step(
        hnet,
        store(["0"]),
        deltas,
        torch.ones(1),
        opt,
        [*hnet.parameters(), store.weight],
        0.0,
        grad_hook=freeze,
    )
    assert torch.equal(frozen.detach(), before)
    assert any(
        not torch.equal(p, q)
        for p, q in zip(
            list(hnet.parameters())[1:], list(make()[1].parameters())[1:], strict=True
        )
    )


def test_undiluted_gives_each_embedding_its_full_gradient_and_phi_the_average():
    ids = ["1", "3", "4"]
    weights = round_weights([10, 30, 60], "samples")
    store, hnet = make()
    targets = [{k: torch.randn(s) for k, s in SHAPES.items()} for _ in ids]

    def deltas_for(theta, members):
        return [
            {k: targets[i][k] - theta[k][j].detach() for k in SHAPES}
            for j, i in enumerate(members)
        ]

    theta = hnet(undiluted(store(ids), weights))
    backprop_deltas(theta, deltas_for(theta, range(3)), weights)
    phi_grad = [p.grad.clone() for p in hnet.parameters()]
    emb_grad = store.weight.grad.clone()

    # φ: the same weighted average as without undiluted
    hnet.zero_grad(), store.zero_grad()
    theta = hnet(store(ids))
    backprop_deltas(theta, deltas_for(theta, range(3)), weights)
    for a, p in zip(phi_grad, hnet.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)
    # each v_i: the gradient of its own client alone, at weight 1
    for j, cid in enumerate(ids):
        hnet.zero_grad(), store.zero_grad()
        theta = hnet(store([cid]))
        backprop_deltas(theta, deltas_for(theta, [j]), torch.ones(1))
        row = store.index[cid]
        torch.testing.assert_close(emb_grad[row], store.weight.grad[row])
