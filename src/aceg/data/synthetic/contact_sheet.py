"""A PNG per scene to see what each split changes.

Row 1 shows mapping frames along the path. Then one row per query split with pairs
``reference | query``: the reference is the nearest mapping frame (camera centre distance
plus viewing-direction difference), except for ``query_light`` whose reference is the
``query_same`` frame of the same pose (lighting A beside lighting B, same viewpoint).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from aceg.io import atomic_path

#: Thumbnail width in pixels.
THUMB_WIDTH = 160

#: Pairs shown per query split, and mapping frames shown in the first row.
PAIRS_PER_ROW = 4
MAPPING_THUMBS = 8

_LABEL_HEIGHT = 18
_GAP = 4


def thumbnail(rgb: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """Image resized to ``width`` (aspect kept), uint8 RGB."""
    height = max(1, round(rgb.shape[0] * width / rgb.shape[1]))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def _nearest_mapping(pose: np.ndarray, mapping_poses: list[np.ndarray]) -> int:
    centres = np.stack([p[:3, 3] for p in mapping_poses])
    axes = np.stack([p[:3, 2] for p in mapping_poses])
    angle = np.arccos(np.clip(axes @ pose[:3, 2], -1.0, 1.0))
    score = np.linalg.norm(centres - pose[:3, 3], axis=1) + angle  # 1 rad ~ 1 m
    return int(np.argmin(score))


def _label(width: int, text: str) -> np.ndarray:
    strip = np.full((_LABEL_HEIGHT, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, _LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def _row(tiles: list[np.ndarray], width: int, gaps_after: set[int]) -> np.ndarray:
    h = tiles[0].shape[0]
    pieces = []
    for i, tile in enumerate(tiles):
        pieces.append(tile)
        gap = 3 * _GAP if i in gaps_after else 1
        pieces.append(np.full((h, gap, 3), 255, np.uint8))
    row = np.concatenate(pieces, axis=1)
    if row.shape[1] < width:
        row = np.concatenate([row, np.full((h, width - row.shape[1], 3), 255, np.uint8)], 1)
    return row[:, :width]


#: Caption of each query split's row.
CAPTIONS = {
    "query_same": "query_same (A, near the path): nearest mapping frame | query",
    "query_light": "query_light (lighting B): same pose under A (query_same) | B",
    "query_view": "query_view (A, other heights / directions): nearest mapping | query",
    "query_moved": "query_moved (A, objects displaced): nearest mapping | query",
}


def sheet_picks(poses: dict[str, list[np.ndarray]]) -> dict[str, list[tuple[int, int | None]]]:
    """The frames the contact sheet shows, from the poses of each split: for ``mapping``
    ``(index, None)`` of the first row's frames, for each query split ``(query index,
    reference index)`` of its pairs (reference: the mapping frame for all but
    ``query_light``, whose reference is the ``query_same`` frame of the same index).

    A caller that renders many frames keeps only these frames' thumbnails."""
    count = len(poses["mapping"])
    picks = {"mapping": [(int(i), None) for i in np.linspace(
        0, count, min(MAPPING_THUMBS, count), endpoint=False)]}
    for split in CAPTIONS:
        if not poses.get(split):
            continue
        pairs = []
        shown = min(PAIRS_PER_ROW, len(poses[split]))
        for i in np.linspace(0, len(poses[split]), shown, endpoint=False).astype(int):
            if split == "query_light" and poses.get("query_same"):
                pairs.append((int(i), int(i)))
            else:
                pairs.append((int(i), _nearest_mapping(poses[split][i], poses["mapping"])))
        picks[split] = pairs
    return picks


def make_contact_sheet(thumbs: dict[str, list[np.ndarray | None]],
                       poses: dict[str, list[np.ndarray]]) -> np.ndarray:
    """The contact sheet (H, W, 3) uint8 RGB from per-split thumbnails and poses (the
    thumbnails of frames :func:`sheet_picks` does not pick may be None)."""
    picks = sheet_picks({split: poses[split] for split in thumbs if split in poses})
    mapping = thumbs["mapping"]
    th, tw = mapping[picks["mapping"][0][0]].shape[:2]
    width = max(MAPPING_THUMBS * (tw + 1), PAIRS_PER_ROW * (2 * tw + 2 + 3 * _GAP))
    rows = [_label(width, "mapping (lighting A): frames along the scanning path"),
            _row([mapping[i] for i, _ in picks["mapping"]], width, set())]
    for split, caption in CAPTIONS.items():
        if split not in picks or split not in thumbs:
            continue
        tiles = []
        for i, reference in picks[split]:
            light_pair = split == "query_light" and "query_same" in thumbs
            source = thumbs["query_same"] if light_pair else mapping
            tiles += [source[reference], thumbs[split][i]]
        rows.append(_label(width, caption))
        rows.append(_row(tiles, width, {2 * k + 1 for k in range(len(picks[split]))}))
    assert all(r.shape[1] == width for r in rows), "contact sheet rows differ in width"
    return np.concatenate(rows, axis=0)


def write_contact_sheet(path: str | Path, thumbs: dict[str, list[np.ndarray]],
                        poses: dict[str, list[np.ndarray]]) -> None:
    """Write :func:`make_contact_sheet` as a PNG (atomically)."""
    write_png(path, make_contact_sheet(thumbs, poses))


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB picture as a PNG, atomically."""
    with atomic_path(path) as tmp:
        ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:  # pragma: no cover - encoding a uint8 image does not fail
            raise RuntimeError(f"cannot encode {path} as PNG")
        tmp.write_bytes(data.tobytes())
