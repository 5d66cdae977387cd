"""PPO math on tiny hand-computed examples: clipped objective, value loss, rewards, GAE, whitening, KL control,
and the response-only log-prob gather against a plain full forward."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlhfkit.ppo.advantages import (
    gae,
    group_normalized,
    kl_loss,
    leave_one_out,
    per_token_rewards,
    shape_scores,
    whiten,
)
from rlhfkit.ppo.kl_controller import KLController
from rlhfkit.ppo.losses import entropy_from_logits, policy_loss, value_loss
from rlhfkit.ppo.rollout import pad_episodes, token_logprobs


def test_clipped_policy_objective_matches_hand_computation():
    # ratios 1.5, 0.5, 0.5 (and a masked token with wild values that must not count)
    old = torch.zeros(1, 4)
    logp = torch.tensor([[math.log(1.5), math.log(0.5), math.log(0.5), 5.0]])
    adv = torch.tensor([[1.0, -1.0, 1.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, stats = policy_loss(logp, old, adv, mask, clip=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(0.5, 0.8) = 0.8 (clipped);
    # token 2: max(-0.5, -0.8) = -0.5 (unclipped)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 0.5) / 3, abs=1e-6)
    assert stats["clip_frac"].item() == pytest.approx(2 / 3)
    k3 = lambda r: (r - 1) - math.log(r)  # noqa: E731
    assert stats["approx_kl"].item() == pytest.approx((k3(1.5) + 2 * k3(0.5)) / 3, abs=1e-6)


def test_clipped_objective_has_no_gradient_once_the_ratio_left_the_trust_region():
    logp = torch.tensor([[math.log(1.5), math.log(1.1)]], requires_grad=True)
    loss, _ = policy_loss(logp, torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2), clip=0.2)
    loss.backward()
    assert logp.grad[0, 0].item() == 0.0  # ratio 1.5 > 1.2 with a positive advantage: clipped
    assert logp.grad[0, 1].item() == pytest.approx(-1.1 / 2)  # d(-r)/dlogp = -r, mean over 2 tokens


def test_clipped_value_loss_matches_hand_computation():
    values = torch.tensor([[1.0, 0.1, 9.0]])
    old = torch.tensor([[0.0, 0.0, 0.0]])
    returns = torch.tensor([[2.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, stats = value_loss(values, old, returns, mask, clip=0.2)
    # token 0: v_clip 0.2 -> max(1, 3.24) = 3.24; token 1: v_clip 0.1 -> 1.21
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1.21) / 2, abs=1e-6)
    assert stats["value_clip_frac"].item() == pytest.approx(0.5)


def test_per_token_rewards_put_the_kl_penalty_everywhere_and_the_score_on_the_last_token():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rewards, kl = per_token_rewards(logp, ref, torch.tensor([2.0, -1.0]), mask, beta=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[-0.05, 2.0, 0.0], [-0.1, 0.0, -1.0]]))


def test_gae_matches_hand_computation_and_ignores_padding():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 7.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [1.0, 1.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # row 0: d2 = 1 - .4 = .6; d1 = .9*.4 - .2 = .16, A1 = .16 + .45*.6 = .43; d0 = .9*.2 - .5 = -.32,
    #        A0 = -.32 + .45*.43 = -.1265.  row 1 (2 tokens): A1 = 2 - 1 = 1; A0 = .9*1 - 1 + .45*1 = .35
    assert torch.allclose(adv, torch.tensor([[-0.1265, 0.43, 0.6], [0.35, 1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.3735, 0.63, 1.0], [1.35, 2.0, 0.0]]), atol=1e-6)


def test_whitening_is_masked_mean_zero_std_one():
    x = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, mask)
    real = w[mask.bool()]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert (real**2).mean().item() == pytest.approx(1.0, abs=1e-4)
    assert w[0, 3].item() == 0.0


def test_scores_are_normalized_clipped_and_unfinished_responses_pay():
    raw = torch.tensor([3.0, 3.0, 100.0])
    finished = torch.tensor([True, False, True])
    s = shape_scores(raw, finished, mean=1.0, std=2.0, clip=5.0, missing_eot_penalty=1.0)
    assert s.tolist() == [1.0, 0.0, 5.0]


def test_kl_controller_fixed_and_adaptive():
    fixed = KLController(0.1)
    assert fixed.update(100.0, 64) == 0.1
    ctl = KLController(0.1, target=6.0, horizon=100)
    assert ctl.update(12.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))  # error clipped to +0.2
    ctl = KLController(0.1, target=6.0, horizon=100)
    assert ctl.update(3.0, 10) == pytest.approx(0.1 * (1 - 0.2 * 10 / 100))  # error -0.5 clipped to -0.2
    ctl = KLController(0.1, target=6.0, horizon=100)
    assert ctl.update(6.6, 50) == pytest.approx(0.1 * (1 + 0.1 * 50 / 100))


def test_response_logprobs_equal_a_full_forward_per_row():
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                         tie_word_embeddings=True, initializer_range=0.3)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    prompts = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11]]
    responses = [[6, 7], [9, 9, 9, 3], [12]]
    seqs, plens, rids, mask = pad_episodes(prompts, responses, pad_id=0, device="cpu")
    batch = {"sequences": seqs, "prompt_lens": plens, "response_ids": rids, "mask": mask}
    with torch.no_grad():
        logp, entropy, _ = token_logprobs(model, batch, temperature=0.7, with_entropy=True)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            logits = model(torch.tensor([p + r])).logits[0] / 0.7
            want = torch.log_softmax(logits, -1)[len(p) - 1 : len(p) + len(r) - 1]
            got = logp[i, : len(r)]
            assert torch.allclose(got, want.gather(1, torch.tensor(r)[:, None])[:, 0], atol=1e-5)
            assert torch.allclose(
                entropy[i, : len(r)], entropy_from_logits(logits[len(p) - 1 : len(p) + len(r) - 1]), atol=1e-5
            )
            assert (logp[i, len(r) :] == 0).all()


def test_length_grouped_minibatches_cover_every_episode_once_with_little_padding():
    from rlhfkit.ppo.update import minibatch_order

    lengths = torch.tensor([40, 160, 41, 158, 90, 42, 161, 89, 39, 91, 157, 88])
    for grouped in (False, True):
        chunks = minibatch_order(lengths, 4, grouped, torch.Generator().manual_seed(0))
        assert sorted(torch.cat(chunks).tolist()) == list(range(12))
        assert all(len(c) == 4 for c in chunks)
    chunks = minibatch_order(lengths, 4, True, torch.Generator().manual_seed(0))
    assert sorted(int(lengths[c].max() - lengths[c].min()) for c in chunks) == [3, 3, 4]  # neighbours only
    again = minibatch_order(lengths, 4, True, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(chunks, again))  # seeded
    orders = {tuple(int(c[0]) for c in minibatch_order(lengths, 4, True, torch.Generator().manual_seed(s)))
              for s in range(8)}  # fmt: skip
    assert len(orders) > 1  # the order of minibatches is shuffled


def test_leave_one_out_baseline_is_the_mean_of_the_other_responses_to_the_same_prompt():
    returns = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])  # two prompts, k = 3
    adv = leave_one_out(returns, 3)
    # prompt 1: 1 - (2+6)/2 = -3, 2 - (1+6)/2 = -1.5, 6 - (1+2)/2 = 4.5; prompt 2: -1.5, -1.5, 3
    assert adv.tolist() == pytest.approx([-3.0, -1.5, 4.5, -1.5, -1.5, 3.0])
    # with k = 2 it is the difference of the pair
    assert leave_one_out(torch.tensor([5.0, 2.0]), 2).tolist() == pytest.approx([3.0, -3.0])
    with pytest.raises(ValueError):
        leave_one_out(returns, 1)


def test_group_normalized_advantages_standardize_each_prompt_on_its_own():
    returns = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    adv = group_normalized(returns, 3, eps=0.0 + 1e-12)
    # group 1: mean 2, unbiased std 1 -> -1, 0, 1; group 2: all equal -> 0 (no signal, no NaN)
    assert adv[:3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    assert adv[3:].tolist() == pytest.approx([0.0, 0.0, 0.0])


def test_k3_kl_loss_is_zero_at_the_reference_and_matches_hand_computation():
    logp = torch.tensor([[-1.0, -2.0, -5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert float(kl_loss(logp, logp.clone(), mask)) == pytest.approx(0.0)
    ref = torch.tensor([[-1.5, -1.0, 0.0]])
    d = [-0.5, 1.0]  # ref - logp on the two real tokens
    expected = sum(math.exp(x) - x - 1 for x in d) / 2
    assert float(kl_loss(logp, ref, mask)) == pytest.approx(expected)


def test_chosen_logprobs_and_entropy_equal_log_softmax_with_its_gradient():
    from rlhfkit.ppo.chosen_logprobs import chosen_logprobs

    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(6, 11, generator=g) * 4).requires_grad_()
    chosen = torch.randint(0, 11, (6,), generator=g)
    weights = torch.randn(6, generator=g)
    log_probs = logits.log_softmax(-1)
    want = log_probs.gather(1, chosen[:, None])[:, 0]
    (want * weights).sum().backward()
    want_grad = logits.grad.clone()
    logits.grad = None
    logp, entropy = chosen_logprobs(logits, chosen)
    (logp * weights).sum().backward()
    torch.testing.assert_close(logp, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logits.grad, want_grad, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(entropy, -(log_probs.exp() * log_probs).sum(-1).detach(), atol=1e-5, rtol=1e-5)
    assert not entropy.requires_grad
