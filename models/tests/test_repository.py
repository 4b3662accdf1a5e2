"""The prepared repository (make models) honours REPOSITORY.md and still computes what upstream computes.

These recompute everything from model.onnx with ONNX Runtime (no cached verdicts), and include negative controls so
the agreement rules are shown to be able to fail."""
import json

import numpy as np
import onnx
import pytest

import images
import verify


@pytest.fixture(scope="module")
def repo(settings):
    index_path = settings.repository / "index.json"
    assert index_path.is_file(), f"no prepared repository at {settings.repository}: run `make models` first"
    return settings.repository, json.loads(index_path.read_text())


@pytest.fixture(scope="module")
def ref(settings):
    return verify.Reference(settings.images)


def load(repo, name):
    root, _ = repo
    cfg = json.loads((root / name / "config.json").read_text())
    labels = (root / name / "labels.txt").read_text(encoding="utf-8").splitlines()
    return cfg, labels, verify.session(root / name / "model.onnx")


def test_index_matches_manifest(repo, manifest):
    _, index = repo
    assert index["format"] == 1
    assert index["variants"] == [v["name"] for v in manifest["variant"]]
    assert index["defaults"] == {"classification": "mobilenet_v2_1.0_224", "detection": "ssd_mobilenet_v2_fpnlite_256",
                                 "segmentation": "deeplabv3_mnv2_513"}


def test_every_variant_follows_the_contract(repo, manifest):
    root, index = repo
    by_name = {v["name"]: v for v in manifest["variant"]}
    serving = {v["name"]: v.get("serving", {}) for v in manifest["variant"]}
    for name in index["variants"]:
        d = root / name
        assert sorted(p.name for p in d.iterdir()) == ["config.json", "labels.txt", "model.onnx"], name
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["name"] == name and cfg["model_file"] == "model.onnx" and cfg["labels_file"] == "labels.txt"
        assert cfg["serving"] == serving[name], name  # the server's layout hints, as the manifest states them
        assert set(cfg["serving"]) <= {"sessions", "max_batch_size"}, name
        assert set(cfg["attributes"]) == {"width", "resolution", "precision", "dataset", "parameters", "multiply_adds"}
        assert cfg["attributes"]["dataset"] == by_name[name]["attributes"]["dataset"], name
        assert cfg["attributes"]["parameters"] > 0 and cfg["attributes"]["multiply_adds"] > 0
        model = onnx.load(str(d / "model.onnx"), load_external_data=False)
        assert cfg["input"]["name"] == model.graph.input[0].name
        for vi in list(model.graph.input) + list(model.graph.output):
            assert vi.type.tensor_type.shape.dim[0].dim_param == "N", (name, vi.name)
        outputs = {o.name for o in model.graph.output}
        named = {k: v for k, v in cfg["output"].items() if k in ("scores", "boxes", "anchors", "map", "logits", "classes", "count")}
        assert set(named.values()) <= outputs, (name, named, outputs)
        # The contract serves every score, box and logit output as float32; only class maps are integers.
        float_outputs = {v for k, v in named.items() if k in ("scores", "boxes", "anchors", "logits")}
        for o in model.graph.output:
            if o.name in float_outputs:
                assert o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, (name, o.name)
    assert not [p for p in root.iterdir() if p.name.startswith((".tmp-", ".old-"))], "half-written folders left"


@pytest.mark.parametrize("name", ["mobilenet_v2_1.0_224", "mobilenet_v2_1.0_224_int8", "mobilenet_v2_1.0_96",
                                  "mobilenet_v2_1.0_224_int8_per_channel", "mobilenet_v2_1.0_224_inat_bird",
                                  "ssd_mobilenet_v2_fpnlite_256", "ssdlite_mobilenet_v2_person", "ssd_mobilenet_v1_300",
                                  "deeplabv3_mnv2_513", "deeplabv3_mnv2_dm05_513", "deeplabv3_mnv2_257"])
def test_batch_equals_single_runs(repo, ref, name):
    cfg, _, sess = load(repo, name)
    r = verify.check_batch(sess, cfg, ref)
    assert r.ok, r.detail


@pytest.mark.parametrize("name", ["mobilenet_v2_1.0_224", "mobilenet_v2_1.0_224_int8"])
def test_classification_agrees_with_reference(repo, ref, name):
    cfg, labels, sess = load(repo, name)
    assert len(labels) == 1001 and labels[0] == "background"
    r = verify.check_classification_reference(sess, cfg, ref, "classify_stretch")
    assert r.ok, r.detail


def test_float_classifier_scores_are_continuous(repo, ref):
    """The float variants serve the float softmax, not the uint8 model's multiples of 1/256 (graph_surgery.float_output)."""
    cfg, _, sess = load(repo, "mobilenet_v2_1.0_224")
    scores = verify.run(sess, images.batch([ref.path("parrot.jpg")], cfg["input"]))["scores"][0]
    assert np.count_nonzero(scores) == scores.size
    assert np.count_nonzero(np.mod(scores * 256, 1)) > 0.9 * scores.size
    assert abs(float(scores.sum()) - 1) < 1e-4


@pytest.mark.parametrize("name,size", [("mobilenet_v2_1.0_224_inat_bird", 965), ("mobilenet_v2_1.0_224_inat_insect", 1022)])
def test_inat_background_is_the_last_class(repo, ref, name, size):
    cfg, labels, sess = load(repo, name)
    assert len(labels) == size and labels[-1] == "background" and cfg["output"]["background_index"] == size - 1
    # A photo with no bird or insect in it is answered "background" by the upstream model: the column is right.
    scores = verify.run(sess, images.batch([ref.path("grace_hopper.bmp")], cfg["input"]))["scores"][0]
    assert scores.argmax() == size - 1


def test_tflite_reference_is_what_the_served_graphs_answer(repo, ref):
    """tflite_reference.json: the TFLite interpreter's top-5 per image; the bit-exact variants' ONNX graphs give the
    very same lists, the per-channel one the same top-1."""
    root, _ = repo
    reference = json.loads((root / "tflite_reference.json").read_text())
    assert {"mobilenet_v2_1.0_224_int8", "mobilenet_v2_1.0_224_int8_per_channel", "mobilenet_v2_1.0_224_inat_bird",
            "mobilenet_v2_1.0_224_inat_insect"} <= set(reference)
    for name, answers in reference.items():
        cfg, labels, sess = load(repo, name)
        assert sorted(answers) == ref.names, name
        scores = verify.run(sess, images.batch([ref.path(n) for n in ref.names], cfg["input"]))["scores"]
        for n, s in zip(ref.names, scores):
            ours = verify.top5(s.tolist(), labels, cfg["output"]["background_index"])
            want = answers[n]["top5"]
            assert all(labels[i] == label and 0 < score <= 1 for i, label, score in want), (name, n)
            if name.endswith("_per_channel"):  # not bit-exact (verification.json says why); same answer first
                assert ours[0][0] == want[0][0], (name, n, ours, want)
            else:
                assert ours == want, (name, n)


def test_detection_agrees_with_reference(repo, ref):
    cfg, labels, sess = load(repo, "ssd_mobilenet_v2_fpnlite_256")
    r = verify.check_detection_reference(sess, cfg, ref, labels)
    assert r.ok, r.detail


@pytest.mark.parametrize("name,key", [("deeplabv3_mnv2_513", "segment_513"), ("deeplabv3_mnv2_257", "segment_257")])
def test_segmentation_agrees_with_reference(repo, ref, name, key):
    cfg, labels, sess = load(repo, name)
    assert len(labels) == 21
    r = verify.check_segmentation_reference(sess, cfg, ref, key)
    assert r.ok, r.detail


def test_v1_labels_are_indexed_by_score_column(repo):
    _, labels, _ = load(repo, "ssd_mobilenet_v1_300")
    assert labels[0] == "background" and labels[1] == "person" and labels[18] == "dog" and len(labels) == 91


def test_cost_of_224_is_close_to_paper(repo):
    cfg, _, _ = load(repo, "mobilenet_v2_1.0_224")
    a = cfg["attributes"]
    assert abs(a["parameters"] - 3.4e6) / 3.4e6 < 0.05  # 1001-way classifier, BN folded
    assert abs(a["multiply_adds"] - 300e6) / 300e6 < 0.01


# ---- negative controls: the rules used above do reject wrong answers --------------------------------------------
def test_top1_rule_rejects_wrong_class(ref):
    entry = ref.data["cat.bmp"]["classify_stretch"]
    assert verify.top1_agrees(entry[0]["index"], entry)
    assert not verify.top1_agrees(1, entry)


def test_detection_rule_rejects_shifted_box():
    box = np.array([0.1, 0.1, 0.5, 0.5])
    labels = ["background", "cat"]
    assert verify.match_detections([(1, 0.9, box)], [("cat", 0.9, box.tolist())], labels) == []
    assert verify.match_detections([(1, 0.9, box + 0.1)], [("cat", 0.9, box.tolist())], labels)
    assert verify.match_detections([(0, 0.9, box)], [("cat", 0.9, box.tolist())], labels)


def test_center_size_decoding():
    o = {"box_coding": "center_size", "box_scales": [10.0, 10.0, 5.0, 5.0]}
    anchors = np.array([[0.5, 0.5, 0.2, 0.4]])  # yc, xc, h, w
    np.testing.assert_allclose(verify.decode_boxes(o, np.zeros((1, 4)), anchors), [[0.3, 0.4, 0.7, 0.6]])


def test_auto_ladders_rank_by_quality(repo, manifest):
    """index.json's `auto` ladders: the default first, only variants with a quality figure and the default's label
    set, published figures before measured agreements, each in decreasing value."""
    root, index = repo
    by_name = {v["name"]: v for v in manifest["variant"]}
    for task, ladder in index["auto"].items():
        assert ladder[0] == index["defaults"][task], task
        qualities = [json.loads((root / n / "config.json").read_text())["quality"] for n in ladder]
        measured = [q["source"].startswith("measured") for q in qualities]
        assert measured == sorted(measured), (task, ladder)  # published first
        for kind in (False, True):
            values = [q["value"] for q, m in zip(qualities, measured) if m == kind]
            assert values == sorted(values, reverse=True), (task, ladder)
        datasets = {json.loads((root / n / "config.json").read_text())["attributes"]["dataset"] for n in ladder}
        assert datasets == {by_name[ladder[0]]["attributes"]["dataset"]}, (task, ladder)
    assert "ssdlite_mobilenet_v2_person" not in index["auto"]["detection"]  # one class: never an answer to COCO
    assert index["auto"]["detection"][1:] == ["ssd_mobilenet_v1_300"]  # ranked by its F1 with the default's answers
    assert not {n for n in index["variants"] if "inat" in n} & set(index["auto"]["classification"])
    for name in index["variants"]:
        cfg = json.loads((root / name / "config.json").read_text())
        assert ("quality" in cfg) == ("quality" in by_name[name]), name
