"""mmdetection adapter, tested against mmdetection's documented conventions (not mmdetection).

mmdetection 3.x needs compiled mmcv ops, which are not installable here. The heads below are
stand-ins with mmdetection's class names and the tensor layouts and loss code paths of
mmdet 3.3.0's AnchorHead.loss_by_feat / loss_by_feat_single (per level), SSDHead's (per image),
FocalLoss (weighted sum / avg_factor) and PseudoSampler's avg_factor (sum over images of
max(1, positives)).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torchvision.ops import sigmoid_focal_loss  # noqa: E402

from conftest import rel  # noqa: E402
from hardmine.capture import DumpWriter, check_mmdet_head, mmdet_avg_factor, mmdet_labels  # noqa: E402
from hardmine.capture.mmdet import MMDetHeadCapture, UnsupportedHeadError  # noqa: E402

C = 3  # num_classes


class PseudoSampler:
    pass


class RandomSampler:
    pass


class FocalLoss:
    gamma = 2.0
    alpha = 0.25


class AnchorGen:
    strides = [(8, 8), (16, 16)]


class AnchorHead:
    """mmdet AnchorHead's loss path: per level, cls_score [N, A*K, H, W] -> [N*H*W*A, K]."""

    use_sigmoid_cls = True

    def __init__(self, sampler=None, pos_weight=-1):
        self.num_classes = C
        self.cls_out_channels = C if self.use_sigmoid_cls else C + 1
        self.sampler = sampler if sampler is not None else PseudoSampler()
        self.train_cfg = {"pos_weight": pos_weight, "neg_pos_ratio": 3}
        self.loss_cls = FocalLoss()
        self.prior_generator = AnchorGen()

    def get_targets(self, *a):  # the real one is not called by the capture
        raise AssertionError("the capture must not call get_targets a second time")

    def _get_targets_single(self, *a):
        raise AssertionError

    def loss_by_feat(self, cls_scores, labels_list, weights_list, anchors_list, avg_factor):
        # multi_apply(self.loss_by_feat_single, ..., avg_factor=avg_factor) over levels
        out = [self.loss_by_feat_single(s, None, a, lab, w, None, None, avg_factor=avg_factor)
               for s, lab, w, a in zip(cls_scores, labels_list, weights_list, anchors_list)]
        return {"loss_cls": out}

    def loss_by_feat_single(self, cls_score, bbox_pred, anchors, labels, label_weights,
                            bbox_targets, bbox_weights, avg_factor):
        labels = labels.reshape(-1)
        label_weights = label_weights.reshape(-1)
        cls_score = cls_score.permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels)
        # mmdet FocalLoss(use_sigmoid=True): one-hot over C, label C -> all-zero target row
        target = F.one_hot(labels, C + 1)[:, :C].float()
        loss = sigmoid_focal_loss(cls_score, target, alpha=0.25, gamma=2.0, reduction="none")
        return (loss.sum(1) * label_weights).sum() / avg_factor


class RetinaHead(AnchorHead):
    pass


class SSDHead(AnchorHead):
    use_sigmoid_cls = False

    def loss_by_feat(self, cls_scores, labels_list, weights_list, anchors_list, avg_factor):
        n = cls_scores[0].shape[0]
        all_scores = torch.cat([s.permute(0, 2, 3, 1).reshape(n, -1, self.cls_out_channels)
                                for s in cls_scores], 1)
        all_labels = torch.cat(labels_list, -1).view(n, -1)
        all_weights = torch.cat(weights_list, -1).view(n, -1)
        all_anchors = torch.cat(anchors_list, 1)
        out = [self.loss_by_feat_single(all_scores[i], None, all_anchors[i], all_labels[i],
                                        all_weights[i], None, None, avg_factor=avg_factor)
               for i in range(n)]
        return {"loss_cls": out}

    def loss_by_feat_single(self, cls_score, bbox_pred, anchor, labels, label_weights,
                            bbox_targets, bbox_weights, avg_factor):
        # mmdet 3.3.0 SSDHead.loss_by_feat_single, classification part
        loss_cls_all = F.cross_entropy(cls_score, labels, reduction="none") * label_weights
        pos_inds = ((labels >= 0) & (labels < self.num_classes)).nonzero().reshape(-1)
        neg_inds = (labels == self.num_classes).nonzero().view(-1)
        num_neg = min(self.train_cfg["neg_pos_ratio"] * pos_inds.size(0), neg_inds.size(0))
        topk, _ = loss_cls_all[neg_inds].topk(num_neg)
        return (loss_cls_all[pos_inds].sum() + topk.sum()) / avg_factor


class ATSSHead(AnchorHead):
    def get_targets(self, *a):
        raise AssertionError


class RPNHead(AnchorHead):
    pass


class MyHead(RetinaHead):
    def loss_by_feat_single(self, *a, **k):
        return super().loss_by_feat_single(*a, **k)


def make_batch(softmax: bool):
    """Two levels (4x4 and 2x2 maps, 2 anchors per location), 3 images, the last without
    positives; labels/weights by mmdetection's convention (C background, weight 0 ignored)."""
    g = torch.Generator().manual_seed(0)
    k = C + 1 if softmax else C
    shapes = [(4, 4), (2, 2)]
    a = 2
    n = 3
    scores = [torch.randn(n, a * k, h, w, generator=g) * 2 for h, w in shapes]
    labels, weights, anchors = [], [], []
    for h, w in shapes:
        cnt = h * w * a
        lab = torch.randint(0, C + 1, (n, cnt), generator=g)
        lab[lab == 1] = C  # mostly background
        lab[2] = C  # image 2: no positives
        wt = torch.ones(n, cnt)
        if not softmax:
            wt[torch.rand(n, cnt, generator=g) < 0.15] = 0.0  # ignored / outside the image
        lab[wt == 0] = C  # mmdet's unmap fills ignored anchors with the background label
        labels.append(lab)
        weights.append(wt)
        anchors.append(torch.rand(n, cnt, 4, generator=g) * 64)
    per_image = [torch.cat([lab[i] for lab in labels]) for i in range(n)]
    avg_factor = sum(max(int(((x >= 0) & (x < C)).sum()), 1) for x in per_image)
    return scores, labels, weights, anchors, avg_factor, shapes, a


def test_mmdet_labels_convention():
    labels = np.array([0, 2, 3, 3, 1, 3])
    weights = np.array([1, 1, 1, 0, 0, 1.0])
    np.testing.assert_array_equal(mmdet_labels(labels, weights, 3), [0, 2, -1, -2, -2, -1])
    np.testing.assert_array_equal(mmdet_labels(labels, weights, 3, use_sigmoid=False),
                                  [0, 2, 3, -2, -2, 3])
    with pytest.raises(ValueError, match="outside mmdetection"):
        mmdet_labels(np.array([4]), np.array([1.0]), 3)
    with pytest.raises(ValueError, match="pos_weight"):
        mmdet_labels(np.array([0]), np.array([2.0]), 3)


def test_avg_factor_is_sum_of_per_image_max_one():
    per_image = [np.array([0, 3, 3, 1]), np.array([3, 3]), np.array([2, 3])]
    assert mmdet_avg_factor(per_image, 3) == 2 + 1 + 1  # not the batch's 3 positives


def test_refusals():
    assert check_mmdet_head(RetinaHead()) == "anchor"
    assert check_mmdet_head(SSDHead()) == "ssd"
    with pytest.raises(UnsupportedHeadError, match="returns the anchors first"):
        check_mmdet_head(ATSSHead())
    with pytest.raises(UnsupportedHeadError, match="RPN head.*sampled"):
        check_mmdet_head(RPNHead(sampler=RandomSampler()))
    with pytest.raises(UnsupportedHeadError, match="uses RandomSampler.*weight 0"):
        check_mmdet_head(RetinaHead(sampler=RandomSampler()))
    with pytest.raises(UnsupportedHeadError, match="pos_weight=2"):
        check_mmdet_head(RetinaHead(pos_weight=2))
    with pytest.raises(UnsupportedHeadError, match="loss_by_feat_single from MyHead"):
        check_mmdet_head(MyHead())


def test_retinahead_capture_matches_mmdet_loss(tmp_path, analyze):
    head = RetinaHead()
    cap = MMDetHeadCapture(head, DumpWriter(tmp_path, rank=0))
    scores, labels, weights, anchors, avg_factor, shapes, a = make_batch(softmax=False)
    out = head.loss_by_feat(scores, labels, weights, anchors, avg_factor)
    loss_cls = float(sum(out["loss_cls"]))
    path = tmp_path / "part-r00000-s0000000000.parquet"
    t = pq.read_table(path)
    meta = json.loads(pq.ParquetFile(path).schema_arrow.metadata[b"hardmine.capture"])
    assert meta["avg_factor"] == avg_factor
    positives = int(sum(((lab >= 0) & (lab < C)).sum() for lab in labels))
    assert avg_factor != positives  # image 2 has none: max(1, 0) counts 1
    # Layout: anchor (h, w, a) of level 0 in image 1 holds cls_score[1, a*C + c, h, w].
    ids = t["image_id"].to_numpy()
    img1 = np.asarray(t["logits"].combine_chunks().flatten()).reshape(-1, C)[ids == ids[-1] - 1]
    h, w, k = 2, 3, 1
    row = (h * shapes[0][1] + w) * a + k
    np.testing.assert_allclose(img1[row], scores[0][1, k * C:(k + 1) * C, h, w].numpy())
    # Labels: C -> -1, weight 0 -> -2.
    lab1 = t["label"].to_numpy()[ids == ids[-1] - 1]
    src = torch.cat([lab[1] for lab in labels]).numpy()
    wsrc = torch.cat([wt[1] for wt in weights]).numpy()
    np.testing.assert_array_equal(lab1, np.where(wsrc == 0, -2, np.where(src == C, -1, src)))
    np.testing.assert_array_equal(t["level"].to_numpy()[ids == ids[0]],
                                  np.repeat([3, 4], [16 * a, 4 * a]))
    # mmdetection's loss = hardmine's focal total / avg_factor.
    j = analyze(path, *cap.analyze_args)
    focal = next(s for s in j["strategies"] if s["name"] == "focal")
    assert cap.analyze_args == ["--strategies", "focal", "--gamma", "2", "--alpha", "0.25"]
    assert rel(focal["loss"]["total"] / avg_factor, loss_cls) <= 1e-5
    cap.remove()
    assert "loss_by_feat" not in head.__dict__


def test_ssdhead_capture_matches_mmdet_loss(tmp_path, analyze):
    head = SSDHead()
    cap = MMDetHeadCapture(head, DumpWriter(tmp_path, rank=0))
    assert cap.analyze_args[:4] == ["--activation", "softmax", "--background-class", "3"]
    scores, labels, weights, anchors, avg_factor, shapes, a = make_batch(softmax=True)
    out = head.loss_by_feat(scores, labels, weights, anchors, avg_factor)
    loss_cls = float(sum(out["loss_cls"]))
    path = tmp_path / "part-r00000-s0000000000.parquet"
    j = analyze(path, *cap.analyze_args)
    ssd = next(s for s in j["strategies"] if s["name"] == "ssd")
    assert rel(ssd["loss"]["total"] / avg_factor, loss_cls) <= 1e-5
    labels_dumped = pq.read_table(path, columns=["label"])["label"].to_numpy()
    assert labels_dumped.max() == C and labels_dumped.min() >= 0  # background stays C


def test_hook_module_needs_mmengine():
    try:
        import mmengine  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs mmengine"):
            import hardmine.capture.mmdet_hook  # noqa: F401
    else:  # pragma: no cover - mmengine is not in requirements-test.txt
        import hardmine.capture.mmdet_hook as hook

        assert hook.HardmineCaptureHook.__mro__[1].__name__ == "Hook"
