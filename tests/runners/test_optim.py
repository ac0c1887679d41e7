import math

import pytest
import torch

from runners.optim import BertAdam, build_adam, build_adamw, cosine_with_warmup, warmup_cosine, warmup_cosine_floor


def test_warmup_cosine_factor():
    assert warmup_cosine(0.0, 0.1) == 0.0
    assert warmup_cosine(0.05, 0.1) == pytest.approx(0.5)
    # the cosine runs on the raw progress, so warm-up ends with a drop from 1.0 to 0.976
    assert warmup_cosine(0.1, 0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    assert warmup_cosine(1.0, 0.1) == pytest.approx(0.0)
    assert cosine_with_warmup(0.1, 0.1) == pytest.approx(1.0)


def test_bert_adam_matches_hand_computed_three_steps():
    """Scalar parameter, t_total 4, warmup 0.5: factors 0, 0.5, then 0.5(1+cos(pi/2)) = 0.5."""
    lr, b1, b2, e, wd = 0.1, 0.9, 0.98, 1e-6, 0.2
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = BertAdam([p], lr=lr, t_total=4, warmup=0.5, b1=b1, b2=b2, e=e, weight_decay=wd, max_grad_norm=1.0)
    grads = [torch.tensor([0.3, -0.4]), torch.tensor([3.0, 4.0]), torch.tensor([-0.1, 0.2])]
    factors = [0.0, 0.5, 0.5 * (1 + math.cos(math.pi * 0.5))]
    ref = [1.0, -2.0]
    m, v = [0.0, 0.0], [0.0, 0.0]
    for g, factor in zip(grads, factors):
        g = g.tolist()
        norm = math.sqrt(sum(x * x for x in g))
        if norm > 1.0:  # per-tensor clipping as torch's clip_grad_norm_ does it
            g = [x / (norm + 1e-6) for x in g]
        for i in range(2):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            update = m[i] / (math.sqrt(v[i]) + e) + wd * ref[i]
            ref[i] -= lr * factor * update
    for g in grads:
        p.grad = g.clone()
        opt.step()
    assert p.detach().tolist() == pytest.approx(ref, abs=1e-6)
    assert ref != pytest.approx([1.0, -2.0])


def test_bert_adam_state_dict_round_trip_is_plain_data(tmp_path):
    p = torch.nn.Parameter(torch.ones(3))
    opt = BertAdam([p], lr=0.1, t_total=10)
    p.grad = torch.ones(3)
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "o.pt")
    state = torch.load(tmp_path / "o.pt", weights_only=True)
    opt2 = BertAdam([torch.nn.Parameter(torch.ones(3))], lr=0.1, t_total=10)
    opt2.load_state_dict(state)
    assert opt2.param_groups[0]["schedule"] is warmup_cosine
    assert opt2.current_lrs()["0"] == pytest.approx(0.1 * warmup_cosine(0.1, 0.1))


def test_group_learning_rates_follow_backbone_and_head():
    a, b = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    groups = [{"group": "backbone", "params": [a]}, {"group": "head", "params": [b]}]
    opt, sched = build_adamw(groups, total_steps=10, lr=1e-3, backbone_lr=1e-5, warmup=0.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-5, 1e-3])


def test_adam_cosine_per_epoch_is_cosine_annealing_stepped_per_epoch():
    """WCH's schedule (spec §11): torch's CosineAnnealingLR(T_max=epochs, eta_min=0), stepped once per epoch,
    while the runner steps the scheduler after every optimiser step."""
    epochs, steps = 5, 3
    weights = [torch.nn.Parameter(torch.zeros(2))]
    opt, sched = build_adam([{"group": "head", "params": weights}], total_steps=epochs * steps, steps_per_epoch=steps,
                            lr=0.01)
    reference_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=0.01)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(reference_opt, T_max=epochs)
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["weight_decay"] == 0.0
    for _ in range(epochs):
        for _ in range(steps):
            assert opt.param_groups[0]["lr"] == pytest.approx(reference_opt.param_groups[0]["lr"], abs=1e-12)
            opt.step()
            sched.step()
        reference_opt.step()
        reference.step()
    _, per_step = build_adam([{"params": [torch.nn.Parameter(torch.zeros(2))]}], total_steps=4, steps_per_epoch=2,
                             lr=1.0, step_every="step")
    per_step.optimizer.step()
    per_step.step()
    assert per_step.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_warmup_cosine_floor_rises_from_a_tenth_and_ends_at_a_hundredth():
    # 5 warm-up epochs of 100 (warmup 0.05), as the two-tower recipe
    assert warmup_cosine_floor(0.0, 0.05) == pytest.approx(0.1)
    assert warmup_cosine_floor(0.025, 0.05) == pytest.approx(0.55)
    assert warmup_cosine_floor(0.05, 0.05) == pytest.approx(1.0)
    assert warmup_cosine_floor(0.525, 0.05) == pytest.approx(0.01 + 0.99 * 0.5)
    assert warmup_cosine_floor(1.0, 0.05) == pytest.approx(0.01)
