"""SANN (docs/design.md §7): structure, fused vs reference parity, checkpoints and convert."""
import copy

import pytest
import torch

import sam_fused
from sam_fused import reference
from sam_fused.models import SANN


def attention_inputs(model, x):
    """Shapes the spatial-attention layers see for input x (recorded by forward hooks)."""
    shapes = []
    handles = [block.attention.register_forward_hook(lambda m, inp, out: shapes.append(tuple(inp[0].shape)))
               for block in model.blocks]
    model(x)
    for handle in handles:
        handle.remove()
    return shapes


def twins(attention_a="reference", attention_b="fused", **kwargs):
    """A model of each variant with the same weights (b loads a's state_dict)."""
    torch.manual_seed(0)
    a = SANN(kwargs.pop("in_modalities", 6), kwargs.pop("num_classes", 4), attention=attention_a, **kwargs)
    b = SANN(a.in_modalities, a.classifier.out_features, attention=attention_b, **kwargs)
    b.load_state_dict(a.state_dict(), strict=True)
    return a, b


def test_uci_har_shapes_seen_by_the_attention_layer_are_the_design_ones():
    model = SANN(9, 6)
    with torch.no_grad():
        shapes = attention_inputs(model.eval(), torch.randn(2, 1, 128, 9))
    assert shapes == [(2, 64, 64, 9), (2, 128, 32, 9), (2, 256, 16, 9), (2, 512, 8, 9)]
    assert model.classifier.in_features == 512 * 9 and model.classifier.out_features == 6


def test_block_structure_is_conv_attention_norm_relu():
    model = SANN(6, 4, attention="reference")
    for block in model.blocks:
        assert [type(m) for m in block] == [torch.nn.Conv2d, reference.SpatialAttentionModule,
                                            torch.nn.BatchNorm2d, torch.nn.ReLU]
        assert (block.conv.kernel_size, block.conv.stride, block.conv.padding) == ((3, 1), (2, 1), (1, 0))
    assert model.pool.output_size == (1, 6)


def test_block_conv_and_channels_are_constructor_arguments():
    model = SANN(5, 3, block_kernel=(5, 1), block_stride=(3, 1), block_padding=(2, 0), channels=(8, 16))
    assert len(model.blocks) == 2
    assert model.blocks[0].conv.kernel_size == (5, 1) and model.blocks[1].conv.stride == (3, 1)
    with torch.no_grad():
        shapes = attention_inputs(model.eval(), torch.randn(2, 1, 31, 5))
    assert shapes == [(2, 8, 11, 5), (2, 16, 4, 5)]
    assert model.classifier.in_features == 16 * 5


def test_three_dim_input_is_unsqueezed():
    model = SANN(6, 4).eval()
    x = torch.randn(3, 20, 6)
    with torch.no_grad():
        assert torch.equal(model(x), model(x.unsqueeze(1)))
        assert model(x).shape == (3, 4)


@pytest.mark.parametrize("shape", [(2, 20, 5), (2, 2, 20, 6), (2, 1, 1, 20, 6), (20, 6)])
def test_rejects_inputs_that_are_not_windows_of_m_channels(shape):
    with pytest.raises(ValueError, match=r"\[N, 1, T, 6\]"):
        SANN(6, 4)(torch.randn(shape))


def test_rejects_unknown_attention():
    with pytest.raises(ValueError, match="attention"):
        SANN(6, 4, attention="cbam")


@pytest.mark.parametrize("kwargs", [{}, dict(block_kernel=(5, 1), block_padding=(2, 0), channels=(8, 16, 32))])
def test_fused_equals_reference_forward_and_backward(kwargs):
    ref, fused = twins(**kwargs)
    ref.double().train()
    fused.double().train()
    x = torch.randn(4, 1, 37, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    losses = []
    for model in (ref, fused):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-10, atol=1e-12)
    ref_grads = dict(ref.named_parameters())
    for name, p in fused.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, rtol=1e-8, atol=1e-10, msg=name)
    # BatchNorm running statistics were updated alike.
    for name, buffer in fused.named_buffers():
        torch.testing.assert_close(buffer, dict(ref.named_buffers())[name], msg=name)


def test_state_dicts_are_interchangeable():
    ref, fused = twins()
    assert list(ref.state_dict()) == list(fused.state_dict())
    assert "blocks.0.attention.att_fc.0.weight" in fused.state_dict()
    back = SANN(6, 4, attention="reference")
    back.load_state_dict(fused.state_dict(), strict=True)
    for name, value in ref.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name


def test_convert_turns_a_reference_sann_into_a_fused_one():
    ref = SANN(6, 4, attention="reference").eval()
    x = torch.randn(3, 1, 40, 6)
    with torch.no_grad():
        expected = ref(x)
    converted = sam_fused.convert(copy.deepcopy(ref))
    assert ref.attention == "reference" and converted.attention == "fused"
    assert all(type(block.attention) is sam_fused.SpatialAttentionModule for block in converted.blocks)
    assert not converted.training
    with torch.no_grad():
        torch.testing.assert_close(converted(x), expected, rtol=1e-5, atol=1e-6)
