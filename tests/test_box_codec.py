import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from transcenter.model.detector.box_codec import argmax_cells, decode_boxes, encode_boxes

IMAGE = (512, 384)  # (H, W): non-square on purpose, R_x != R_y


@st.composite
def boxes_strategy(draw):
    """Random boxes inside the image, some touching borders, some smaller than one cell."""
    h, w = IMAGE
    n = draw(st.integers(1, 12))
    out = []
    for _ in range(n):
        bw = draw(st.floats(1.0, w))
        bh = draw(st.floats(1.0, h))
        x1 = draw(st.one_of(st.just(0.0), st.just(w - bw), st.floats(0.0, w - bw)))
        y1 = draw(st.one_of(st.just(0.0), st.just(h - bh), st.floats(0.0, h - bh)))
        out.append([x1, y1, x1 + bw, y1 + bh])
    return torch.tensor(out, dtype=torch.float64)


@settings(max_examples=200, deadline=None)
@given(boxes=boxes_strategy(), s=st.sampled_from([16, 32, 64, 128]),
       encoding=st.sampled_from(["exp", "plain"]))
def test_encode_decode_round_trip(boxes, s, encoding):
    pos, size, off = encode_boxes(boxes, IMAGE, s, encoding)
    assert pos.min() >= 0 and pos.max() <= s - 1 and size.min() >= 0 and size.max() <= s - 1
    back = decode_boxes(pos, size, off, IMAGE, s, encoding)
    assert (back - boxes).abs().max().item() <= 1e-4  # px; fp64 boxes keep fp64 through the codec


def test_round_trip_exact_for_size_cell_zero_and_border():
    # 3 px wide box (size cell 0 at S=16, stride 24 px), and a box flush with the bottom-right.
    boxes = torch.tensor([[10.0, 20.0, 13.0, 22.0], [0.0, 0.0, 384.0, 512.0], [380.0, 500.0, 384.0, 512.0]],
                         dtype=torch.float64)
    for enc in ("exp", "plain"):
        pos, size, off = encode_boxes(boxes, IMAGE, 16, enc)
        assert size[0].tolist() == [0, 0]
        assert size[1].tolist() == [15, 15]  # full-size box clamps to S-1, offset > 1 allowed
        assert off[1, 2] >= 1.0
        back = decode_boxes(pos, size, off, IMAGE, 16, enc)
        assert (back - boxes).abs().max().item() < 1e-4


def test_exp_encoding_scales_offset_by_cell():
    boxes = torch.tensor([[300.0, 300.0, 340.0, 340.0]])
    _, _, plain = encode_boxes(boxes, (512, 512), 16, "plain")
    pos, size, exp = encode_boxes(boxes, (512, 512), 16, "exp")
    cells = torch.cat([pos, size], 1).float()
    assert torch.allclose(exp, plain * torch.exp(cells / 16))


def test_decode_clamps_degenerate_predictions():
    pos = torch.tensor([[0, 0]])
    size = torch.tensor([[0, 0]])
    off = torch.tensor([[-3.0, -3.0, -5.0, -5.0]])
    box = decode_boxes(pos, size, off, (512, 512), 16, "exp")
    assert (box >= 0).all() and (box[:, 2:] - box[:, :2] >= 0).all()


def test_argmax_cells_returns_x_then_y():
    hm = torch.zeros(2, 16, 16)
    hm[0, 3, 7] = 5.0  # row y=3, column x=7
    hm[1, 15, 0] = 2.0
    cells, peak = argmax_cells(hm)
    assert cells.tolist() == [[7, 3], [0, 15]]
    assert peak.tolist() == [5.0, 2.0]
