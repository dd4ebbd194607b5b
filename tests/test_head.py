"""The procedural demo head: real size, clean mesh, and 52 shape keys that do what they say."""

from __future__ import annotations

import numpy as np
import pytest

from emotalk_core import head as hd
from emotalk_core.arkit import CHANNELS

LEFT_RIGHT = [(n, n[: -len("Left")] + "Right") for n in CHANNELS if n.endswith("Left")]
LEFT_RIGHT += [("jawLeft", "jawRight"), ("mouthLeft", "mouthRight")]
UNSIDED = [n for n in CHANNELS if not n.endswith(("Left", "Right"))]


@pytest.fixture(scope="module")
def head() -> hd.HeadMesh:
    return hd.build_head("medium")


def posed(head: hd.HeadMesh, **values: float) -> np.ndarray:
    coeffs = np.zeros((1, len(CHANNELS)), np.float32)
    for name, value in values.items():
        coeffs[0, CHANNELS.index(name)] = value
    return hd.drive(head, coeffs)[0]


def gap(v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(v[a] - v[b], axis=1)


def test_arrays_and_names(head):
    v, k = len(head.vertices), len(CHANNELS)
    assert head.names == CHANNELS
    assert head.vertices.shape == (v, 3) and head.vertices.dtype == np.float32
    assert head.deltas.shape == (k, v, 3) and head.deltas.dtype == np.float32
    assert head.faces.shape[1] == 4 and head.faces.dtype == np.int32
    assert head.faces.min() >= 0 and head.faces.max() < v
    assert np.isfinite(head.vertices).all() and np.isfinite(head.deltas).all()
    assert head.face_materials.shape == (len(head.faces),)
    assert set(np.unique(head.face_materials)) == set(range(len(hd.MATERIALS)))
    for idx in (head.lip_vertices, head.eye_vertices):
        assert idx.dtype == np.int32 and len(idx) > 50 and len(np.unique(idx)) == len(idx)
    assert set(head.landmarks) == set(hd.LANDMARKS)
    assert np.abs(head.delta("jawOpen") - head.deltas[CHANNELS.index("jawOpen")]).max() == 0


def test_real_proportions_in_mm(head):
    v = head.vertices
    chin, nose = v[head.landmarks["chin"][0]], v[head.landmarks["nose_tip"][0]]
    assert 215 < v[:, 2].max() - chin[2] < 245  # chin to crown
    cranium = v[(v[:, 2] > 50) & (v[:, 2] < 100)]
    assert 140 < np.ptp(cranium[:, 0]) < 165  # head breadth
    assert 180 < np.ptp(cranium[:, 1]) < 215  # head length
    pupils = v[head.landmarks["pupils"]]
    assert 58 < pupils[1, 0] * -1 + pupils[0, 0] < 68  # interpupillary distance
    assert pupils[0, 0] > 0  # the left eye is on +X
    assert nose[1] == v[:, 1].min() and abs(nose[0]) < 1e-4  # the face looks towards -Y
    assert chin[2] < nose[2] < pupils[0, 2]


def test_mesh_is_closed_and_consistently_wound(head):
    faces = head.faces
    edges = np.stack([faces, np.roll(faces, -1, axis=1)], -1).reshape(-1, 2)
    assert len(np.unique(edges, axis=0)) == len(edges)  # no edge walked twice the same way
    brow = np.isin(np.arange(len(faces)), np.flatnonzero(head.face_materials == 2))
    walked = {tuple(e) for e in edges}
    open_edges = [i for i, (a, b) in enumerate(edges) if (b, a) not in walked]
    assert brow[np.array(open_edges) // 4].all()  # only the eyebrow strips are open sheets
    v = head.vertices.astype(np.float64)
    a, b, c, d = (v[faces[:, k]] for k in range(4))
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)) + np.einsum("ij,ij->i", a, np.cross(c, d))
    assert volume[~brow].sum() / 6 > 3e6  # outward normals: several litres of head


def test_mirror_map(head):
    v = head.vertices
    assert np.abs(v[head.mirror] * (-1, 1, 1) - v).max() < 0.05
    assert (head.mirror[head.mirror] == np.arange(len(v))).all()


@pytest.mark.parametrize(("left", "right"), LEFT_RIGHT)
def test_right_key_is_the_mirrored_left_key(head, left, right):
    dl, dr = head.delta(left), head.delta(right)
    assert np.abs(dl[head.mirror] * (-1, 1, 1) - dr).max() < 1e-4
    if left not in ("jawLeft", "mouthLeft"):  # those two move across the midline
        side = head.vertices[:, 0] > 0
        moved = np.linalg.norm(dl, axis=1)
        assert moved[side].sum() > 3 * moved[~side].sum()


@pytest.mark.parametrize("name", UNSIDED)
def test_unsided_keys_are_symmetric(head, name):
    d = head.delta(name)
    assert np.abs(d[head.mirror] * (-1, 1, 1) - d).max() < 0.05


@pytest.mark.parametrize("name", CHANNELS)
def test_every_key_moves_something_plausibly(head, name):
    moved = np.linalg.norm(head.delta(name), axis=1)
    assert 1.5 < moved.max() < 35.0, moved.max()


@pytest.mark.parametrize("name", [n for n in CHANNELS if n.startswith(("eye", "brow"))])
def test_eye_and_brow_keys_stay_in_the_upper_face(head, name):
    v, moved = head.vertices, np.linalg.norm(head.delta(name), axis=1) > 0.05
    assert (v[moved, 2] > hd.Z_E - 30).all() and (v[moved, 1] < -35).all()
    if name.startswith("eye"):
        assert (np.abs(np.abs(v[moved, 0]) - hd.EYE_C[0]) < 30).all()


@pytest.mark.parametrize("name", [n for n in CHANNELS if n.startswith(("mouth", "jaw", "tongue"))])
def test_mouth_and_jaw_keys_stay_in_the_lower_face(head, name):
    v, moved = head.vertices, np.linalg.norm(head.delta(name), axis=1) > 0.05
    assert (v[moved, 2] < hd.Z_E - 5).all() and (v[moved, 1] < 0).all()  # not the nape
    assert (v[moved, 2] > -165).all()  # the bottom of the neck stays put


def test_jaw_open_drops_the_chin_and_opens_the_lips(head):
    lm, v = head.landmarks, head.vertices
    open_ = posed(head, jawOpen=1.0)
    drop = v[lm["chin"][0], 2] - open_[lm["chin"][0], 2]
    assert 15.0 < drop < 30.0
    assert 15.0 < gap(open_, lm["lip_upper"], lm["lip_lower"]).max() < 35.0
    middle = lm["lip_upper"][np.abs(v[lm["lip_upper"], 0]) < 8]  # corners follow half-way
    assert np.abs(open_[middle] - v[middle]).max() < 2.0
    assert gap(v, lm["lip_upper"], lm["lip_lower"]).max() < 1e-4  # closed at rest


def test_mouth_close_closes_the_lips_against_an_open_jaw(head):
    lm = head.landmarks
    closed = posed(head, jawOpen=1.0, mouthClose=1.0)
    assert gap(closed, lm["lip_upper"], lm["lip_lower"]).max() < 0.5
    half = posed(head, jawOpen=0.5, mouthClose=0.5)
    assert gap(half, lm["lip_upper"], lm["lip_lower"]).max() < 0.5  # linear: holds at any weight


@pytest.mark.parametrize("side", ["Left", "Right"])
def test_blink_closes_the_lids_and_wide_opens_them(head, side):
    lm, v = head.landmarks, head.vertices
    up, low = lm[f"lid_upper_{side.lower()}"], lm[f"lid_lower_{side.lower()}"]
    other = "right" if side == "Left" else "left"
    rest = gap(v, up, low).max()
    assert 8.0 < rest < 12.0
    blink = posed(head, **{f"eyeBlink{side}": 1.0})
    assert gap(blink, up, low).max() < 0.2
    assert np.abs(blink - v)[lm[f"lid_upper_{other}"]].max() < 1e-6
    assert gap(posed(head, **{f"eyeWide{side}": 1.0}), up, low).max() > rest + 2.0
    assert gap(posed(head, **{f"eyeSquint{side}": 1.0}), up, low).max() < rest - 2.0


def test_gaze_rotates_the_eyeballs(head):
    pupil_l, pupil_r = head.landmarks["pupils"]
    v = head.vertices
    moves = {
        "eyeLookUpLeft": (pupil_l, 2, 1),
        "eyeLookDownLeft": (pupil_l, 2, -1),
        "eyeLookInLeft": (pupil_l, 0, -1),
        "eyeLookOutLeft": (pupil_l, 0, 1),
        "eyeLookInRight": (pupil_r, 0, 1),
        "eyeLookOutRight": (pupil_r, 0, -1),
    }
    for name, (pupil, axis, sign) in moves.items():
        d = posed(head, **{name: 1.0})[pupil] - v[pupil]
        assert sign * d[axis] > 3.0, name
        ball = np.linalg.norm(
            posed(head, **{name: 1.0})[pupil] - (hd.EYE_C * (np.sign(v[pupil, 0]), 1, 1))
        )
        assert abs(ball - hd.EYE_R * 1.04) < 0.05  # still on the eyeball


def test_smile_and_frown_move_their_own_corner(head):
    right, left = head.landmarks["mouth_corners"]
    smile = posed(head, mouthSmileLeft=1.0) - head.vertices
    assert smile[left, 2] > 4.0 and smile[left, 0] > 2.0  # up and outwards
    assert np.abs(smile[right]).max() < 0.5
    smile_r = posed(head, mouthSmileRight=1.0) - head.vertices
    assert smile_r[right, 2] > 4.0 and smile_r[right, 0] < -2.0
    frown = posed(head, mouthFrownLeft=1.0) - head.vertices
    assert frown[left, 2] < -4.0 and abs(frown[right, 2]) < 0.5
    stretch = posed(head, mouthStretchLeft=1.0) - head.vertices
    assert stretch[left, 0] > 4.0


def test_pucker_and_funnel_narrow_and_push_the_lips(head):
    lm, v = head.landmarks, head.vertices
    width = np.ptp(v[lm["mouth_corners"], 0])
    for name in ("mouthPucker", "mouthFunnel"):
        p = posed(head, **{name: 1.0})
        assert np.ptp(p[lm["mouth_corners"], 0]) < width - 10.0
        assert (p[lm["lip_upper"], 1] - v[lm["lip_upper"], 1]).min() < -4.0  # forwards
    funnel = posed(head, mouthFunnel=1.0)
    assert gap(funnel, lm["lip_upper"], lm["lip_lower"]).max() > 4.0  # an "O"
    assert gap(posed(head, mouthPucker=1.0), lm["lip_upper"], lm["lip_lower"]).max() < 1.0


def test_lip_keys_move_the_right_lip(head):
    lm, v = head.landmarks, head.vertices
    up, low = lm["lip_upper"], lm["lip_lower"]
    d = posed(head, mouthUpperUpLeft=1.0) - v
    assert d[up, 2].max() > 3.0 and np.abs(d[low]).max() < 0.1
    assert d[up[v[up, 0] > 0], 2].sum() > 5 * abs(d[up[v[up, 0] < 0], 2].sum())
    d = posed(head, mouthLowerDownLeft=1.0) - v
    assert d[low, 2].min() < -3.0 and np.abs(d[up]).max() < 0.1
    d = posed(head, mouthRollLower=1.0) - v
    assert d[low, 1].max() > 3.0 and np.abs(d[up]).max() < 0.1  # rolls inwards (+Y)
    d = posed(head, mouthRollUpper=1.0) - v
    assert d[up, 1].max() > 3.0 and np.abs(d[low]).max() < 0.1
    d = posed(head, mouthLeft=1.0) - v
    assert d[up, 0].min() > 4.0 and d[low, 0].min() > 4.0
    d = posed(head, jawLeft=1.0) - v
    assert d[low, 0].min() > 4.0 and d[head.landmarks["chin"], 0] > 4.0
    d = posed(head, jawForward=1.0) - v
    assert d[head.landmarks["chin"], 1] < -5.0


def test_brows_cheeks_nose_and_tongue(head):
    v = head.vertices
    brow_l = (np.abs(v[:, 0] - 32) < 8) & (np.abs(v[:, 2] - hd.Z_E - 16) < 3) & (v[:, 1] < -60)
    assert (posed(head, browDownLeft=1.0) - v)[brow_l, 2].min() < -3.0
    assert (posed(head, browOuterUpLeft=1.0) - v)[brow_l, 2].max() > 3.0
    inner = (np.abs(np.abs(v[:, 0]) - 15) < 4) & (np.abs(v[:, 2] - hd.Z_E - 14) < 3)
    inner &= v[:, 1] < -60
    assert (posed(head, browInnerUp=1.0) - v)[inner, 2].min() > 3.0
    puff = posed(head, cheekPuff=1.0) - v
    cheek = np.argmax(np.linalg.norm(puff, axis=1))
    outwards = v[cheek] * (1, 1, 0) - (0, hd.Y0, 0)
    assert puff[cheek] @ outwards / np.linalg.norm(outwards) > 4.0  # cheeks bulge out
    sneer = posed(head, noseSneerLeft=1.0) - v
    assert sneer[:, 2].max() > 3.0
    tongue = posed(head, tongueOut=1.0)
    lips_front = v[head.landmarks["lip_upper"], 1].min()
    assert tongue[:, 1].min() < lips_front - 5.0  # the tongue tip is out of the mouth


def test_regions_are_where_the_metrics_expect_them(head):
    lips, eyes = head.vertices[head.lip_vertices], head.vertices[head.eye_vertices]
    assert (np.abs(lips[:, 0]) < hd.X_C + 2).all() and (np.abs(lips[:, 2] - hd.Z_M) < 14).all()
    assert (lips[:, 1] < -80).all()
    assert (eyes[:, 2] > hd.Z_E - 13).all() and (eyes[:, 2] < hd.Z_E + 30).all()
    assert (np.abs(eyes[:, 0]) > 5).all() and (eyes[:, 0] > 0).any() and (eyes[:, 0] < 0).any()
    assert set(head.landmarks["lip_upper"]) <= set(head.lip_vertices)
    assert set(head.landmarks["lid_upper_left"]) <= set(head.eye_vertices)
    for name in ("jawOpen", "mouthPucker", "mouthSmileLeft"):  # lips move, eyes do not
        d = np.linalg.norm(head.delta(name), axis=1)
        assert d[head.lip_vertices].max() > 3.0 and d[head.eye_vertices].max() < 0.05
    d = np.linalg.norm(head.delta("eyeBlinkLeft"), axis=1)
    assert d[head.eye_vertices].max() > 5.0 and d[head.lip_vertices].max() == 0.0


def test_drive_is_linear(head):
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, (2, 3, len(CHANNELS))).astype(np.float32)
    base = head.vertices[None]
    sum_ab = hd.drive(head, a + b) - base
    assert np.allclose(sum_ab, (hd.drive(head, a) - base) + (hd.drive(head, b) - base), atol=1e-3)
    assert hd.drive(head, np.zeros((4, len(CHANNELS)))).shape == (4, len(head.vertices), 3)
    assert np.array_equal(hd.drive(head, np.zeros((1, len(CHANNELS))))[0], head.vertices)
    with pytest.raises(ValueError):
        hd.drive(head, np.zeros((3, 51)))


def test_npz_round_trip(head, tmp_path):
    path = hd.save_npz(head, tmp_path / "head.npz")
    with np.load(path) as z:
        assert {"base", "vertices", "deltas", "lip_vertices", "eye_vertices", "faces"} <= set(z)
        assert z["base"].shape == head.vertices.shape and z["deltas"].dtype == np.float32
    loaded = hd.load_npz(path)
    for name in ("vertices", "faces", "deltas", "lip_vertices", "eye_vertices", "face_materials",
                 "mirror"):  # fmt: skip
        assert np.array_equal(getattr(loaded, name), getattr(head, name)), name
    assert loaded.names == head.names and loaded.materials == head.materials
    assert loaded.landmarks.keys() == head.landmarks.keys()
    minimal = tmp_path / "minimal.npz"  # what the evaluation loader needs is enough
    np.savez(minimal, base=head.vertices, deltas=head.deltas, lip_vertices=head.lip_vertices,
             eye_vertices=head.eye_vertices)  # fmt: skip
    assert np.array_equal(hd.load_npz(minimal).deltas, head.deltas)
    with pytest.raises(hd.HeadFileError, match="does not exist"):
        hd.load_npz(tmp_path / "none.npz")


def test_resolutions_and_cache():
    low = hd.build_head("low")
    assert len(low.vertices) < len(hd.build_head("medium").vertices)
    assert hd.build_head("low") is low
    assert 215 < np.ptp(low.vertices[:, 2]) < 330
    assert gap(posed(low, jawOpen=1, mouthClose=1), low.landmarks["lip_upper"],
               low.landmarks["lip_lower"]).max() < 0.5  # fmt: skip
    with pytest.raises(ValueError):
        hd.build_head("huge")
    with pytest.raises(ValueError):
        low.vertices[0, 0] = 1.0  # shared by the cache, so read-only


def test_triangles(head):
    tris = hd.triangles(head)
    assert tris.shape == (2 * len(head.faces), 3)
