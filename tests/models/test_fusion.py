import torch

from i2m2_ray.models import ConcatFusion, LowRankTensorFusion


def test_concat_fuses_in_sorted_modality_order() -> None:
    fusion = ConcatFusion({"phase": 1, "magnitude": 2})
    out = fusion({"phase": torch.tensor([[9.0]]), "magnitude": torch.tensor([[1.0, 2.0]])})
    assert fusion.out_features == 3
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0, 9.0]]))


def test_low_rank_fusion_known_value() -> None:
    # rank 1, one output: h = w * (a.[z_a;1]) * (b.[z_b;1]) + bias
    fusion = LowRankTensorFusion({"a": 1, "b": 1}, out_features=1, rank=1)
    with torch.no_grad():
        fusion.factors["a"].copy_(torch.tensor([[[2.0], [1.0]]]))  # 2*z_a + 1
        fusion.factors["b"].copy_(torch.tensor([[[3.0], [0.0]]]))  # 3*z_b
        fusion.rank_weights.fill_(0.5)
        fusion.bias.fill_(1.0)
    out = fusion({"a": torch.tensor([[1.0]]), "b": torch.tensor([[2.0]])})
    torch.testing.assert_close(out, torch.tensor([[0.5 * 3.0 * 6.0 + 1.0]]))


def test_low_rank_fusion_equals_full_tensor_fusion() -> None:
    torch.manual_seed(0)
    fusion = LowRankTensorFusion({"a": 3, "b": 2}, out_features=4, rank=5)
    za, zb = torch.randn(7, 3), torch.randn(7, 2)
    out = fusion({"a": za, "b": zb})
    one = torch.ones(7, 1)
    outer = torch.einsum("bi,bj->bij", torch.cat([za, one], 1), torch.cat([zb, one], 1))
    # the full weight tensor the low-rank factors stand for
    w = torch.einsum("r,rio,rjo->ijo", fusion.rank_weights[0], fusion.factors["a"], fusion.factors["b"])
    expected = torch.einsum("bij,ijo->bo", outer, w) + fusion.bias
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
