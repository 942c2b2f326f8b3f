"""Image files for the tools: listing a folder, reading any image as the RGB tensor a network takes, and writing a
result in the input's own form (grey-scale, alpha channel and 16-bit depth kept where the output format has them)."""
import contextlib
import os
import struct
import zlib
from dataclasses import dataclass
from os import path as osp
from typing import Optional, Tuple

import cv2
import numpy as np
import torch
from torch import Tensor

from coic_basicsr.data.image_files import list_images  # noqa: F401  (the tools list folders from here)

_ALPHA_FORMATS = ('.png', '.tif', '.tiff', '.webp')
_16_BIT_FORMATS = ('.png', '.tif', '.tiff')
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_GREY, _PNG_GREY_ALPHA = 0, 4  # IHDR colour types
_TIFF_HEADERS = {b'II*\x00': ('<', False), b'MM\x00*': ('>', False), b'II+\x00': ('<', True), b'MM\x00+': ('>', True)}
_ORIENTATION, _EXTRA_SAMPLES = 274, 338  # TIFF/EXIF tags
_ASSOCIATED_ALPHA, _UNASSOCIATED_ALPHA = 1, 2  # ExtraSamples values (0: unspecified)
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.swapaxes(0, 1),
           6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a)}


@dataclass
class StoredForm:
    """How an input image was stored, so its result can be stored the same way."""
    gray: bool = False
    alpha: Optional[np.ndarray] = None  # (H, W) of the input's dtype, written back unchanged
    dtype: type = np.uint8


def _scale(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def _png_declares_grey(content: np.ndarray) -> bool:
    """Whether the bytes are a PNG whose header declares grey (+ alpha) pixels: OpenCV decodes grey+alpha as BGRA."""
    header = content[:26].tobytes()
    return (len(header) == 26 and header[:8] == _PNG_SIGNATURE and header[12:16] == b'IHDR'
            and header[25] in (_PNG_GREY, _PNG_GREY_ALPHA))


def _tiff_short_tag(data: memoryview, tag: int) -> Optional[Tuple[int, Tuple[int, ...]]]:
    """``(offset of the values, values)`` of the SHORT ``tag`` in the first IFD of TIFF-structured bytes (a TIFF file,
    EXIF); None when it is absent or the bytes are not TIFF."""
    kind = _TIFF_HEADERS.get(bytes(data[:4]))
    if kind is None:
        return None
    order, big = kind
    pointer, entry = ('Q', 20) if big else ('I', 12)
    try:
        (ifd,) = struct.unpack_from(order + pointer, data, 8 if big else 4)
        (count,) = struct.unpack_from(order + ('Q' if big else 'H'), data, ifd)
        for at in range(ifd + (8 if big else 2), ifd + (8 if big else 2) + min(count, 4096) * entry, entry):
            found, kind_, n = struct.unpack_from(f'{order}HH{pointer}', data, at)
            if found == tag and kind_ == 3 and 0 < n <= 64:  # type 3: SHORT
                values_at = at + entry - struct.calcsize(pointer)
                if 2 * n > struct.calcsize(pointer):  # not inline: the field holds their offset
                    (values_at,) = struct.unpack_from(order + pointer, data, values_at)
                return values_at, struct.unpack_from(f'{order}{n}H', data, values_at)
    except struct.error:  # truncated
        return None
    return None


def _tiff_decoded_as_stored(content: np.ndarray) -> Tuple[np.ndarray, bool]:
    """``(content, associated)``. OpenCV (libtiff's RGBA interface) decodes 8-bit colours with unassociated alpha
    (ExtraSamples 2, as Pillow, tifffile and editors write them) premultiplied, which cannot be undone exactly: such a
    file is relabelled 'unspecified', which OpenCV decodes as stored. ``associated``: the TIFF stores premultiplied
    colours (ExtraSamples 1)."""
    found = _tiff_short_tag(memoryview(content), _EXTRA_SAMPLES)
    if found is None:
        return content, False
    at, values = found
    if values[0] == _UNASSOCIATED_ALPHA:
        content = content.copy()
        content[at:at + 2] = 0
    return content, values[0] == _ASSOCIATED_ALPHA


def _chunk(data: memoryview, start: int, tag: bytes, png: bool) -> Optional[memoryview]:
    """The data of the first ``tag`` chunk of a PNG (big-endian lengths, CRCs) or RIFF/WebP file (padded to even)."""
    while start + 8 <= len(data):
        size, name = (struct.unpack_from('>I', data, start)[0], bytes(data[start + 4:start + 8])) if png else (
            struct.unpack_from('<I', data, start + 4)[0], bytes(data[start:start + 4]))
        if name == tag:
            return data[start + 8:start + 8 + size]
        if png and name == b'IEND':
            return None
        start += 8 + size + (4 if png else size & 1)
    return None


def _exif_orientation(data: memoryview) -> int:
    """The EXIF orientation (1-8) of a PNG (eXIf chunk) or WebP (EXIF chunk); 1 when it has none."""
    exif = None
    if bytes(data[:8]) == _PNG_SIGNATURE:
        exif = _chunk(data, 8, b'eXIf', png=True)
    elif bytes(data[:4]) == b'RIFF' and bytes(data[8:12]) == b'WEBP':
        exif = _chunk(data, 12, b'EXIF', png=False)
    if exif is not None and bytes(exif[:6]) == b'Exif\x00\x00':
        exif = exif[6:]
    found = exif is not None and _tiff_short_tag(exif, _ORIENTATION)
    return found[1][0] if found and found[1][0] in _ORIENT else 1


def _orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """``img`` as displayed: EXIF orientation 2-8 flips and rotates it (as Pillow's ``ImageOps.exif_transpose``)."""
    return _ORIENT[orientation](img) if orientation in _ORIENT else img


def read_image_and_form(path: str) -> Optional[Tuple[Tensor, StoredForm]]:
    """RGB float32 (1, 3, H, W) tensor in [0, 1] at the file's full bit depth, and its :class:`StoredForm`; None when
    the file is empty, corrupt or not an image. Colours are straight (not premultiplied by alpha) and upright (EXIF
    orientation applied). OSError when the file cannot be opened (missing, a dangling link, no permission)."""
    with open(path, 'rb') as f:
        content = np.frombuffer(f.read(), np.uint8)
    if content.size == 0:
        return None
    content, associated = _tiff_decoded_as_stored(content)
    raw = cv2.imdecode(content, cv2.IMREAD_UNCHANGED)
    if raw is None:
        return None
    alpha = raw[:, :, -1] if raw.ndim == 3 and raw.shape[2] in (2, 4) else None
    if alpha is None:  # decoded again so that EXIF orientation applies (IMREAD_UNCHANGED ignores it)
        img = cv2.imdecode(content, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    else:  # OpenCV orients TIFFs itself, even with IMREAD_UNCHANGED, but not PNG or WebP
        img = raw[:, :, 0] if raw.shape[2] == 2 or _png_declares_grey(content) else raw[:, :, :3]
        orientation = _exif_orientation(memoryview(content))
        img, alpha = _orient(img, orientation), np.ascontiguousarray(_orient(alpha, orientation))
    form = StoredForm(gray=img.ndim == 2, alpha=alpha, dtype=img.dtype.type)
    rgb = img.astype(np.float32) / _scale(img.dtype)
    if associated and alpha is not None:  # stored premultiplied: the colours are the samples divided by alpha
        weight = alpha.astype(np.float32) / _scale(alpha.dtype)
        weight = weight if rgb.ndim == 2 else weight[:, :, None]
        rgb = np.divide(rgb, weight, out=np.zeros_like(rgb), where=np.broadcast_to(weight > 0, rgb.shape))
    rgb = np.repeat(rgb[:, :, None], 3, axis=2) if form.gray else rgb[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).clamp_(0, 1).unsqueeze(0), form


def read_image(path: str) -> Optional[Tensor]:
    """RGB float32 (1, 3, H, W) tensor in [0, 1], or None when the file cannot be opened or is empty, corrupt or not
    an image."""
    try:
        read = read_image_and_form(path)
    except OSError:
        return None
    return None if read is None else read[0]


def write_image(img: Tensor, path: str, form: Optional[StoredForm] = None) -> None:
    """Write a (1, 3, H, W) [0, 1] tensor; the format follows the extension; atomic (temp file, then rename).

    With the input's ``form``: a grey-scale input gives a grey-scale file, its alpha channel is kept where the format
    has one (PNG, TIFF, WebP; grey + alpha stays grey + alpha in PNG), and 16-bit depth where the format has it (PNG,
    TIFF); otherwise 8-bit colour.
    """
    form = form or StoredForm()
    ext = osp.splitext(path)[1].lower()
    dtype = form.dtype if ext in _16_BIT_FORMATS and form.dtype in (np.uint8, np.uint16) else np.uint8
    out = img.detach().float().cpu().clamp(0, 1)[0].numpy().transpose(1, 2, 0)[:, :, ::-1]  # BGR
    out = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_BGR2GRAY) if form.gray else out
    out = (out * _scale(dtype)).round().astype(dtype)
    alpha = None
    if form.alpha is not None and ext in _ALPHA_FORMATS:
        alpha = (form.alpha.astype(np.float64) * (_scale(dtype) / _scale(form.alpha.dtype))).round().astype(dtype)
    data = _encode(out, alpha, ext, path)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = osp.join(osp.dirname(osp.abspath(path)), f'.{osp.basename(path)}.tmp')
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:  # a full disk, OUTPUT/<name> an existing folder, an interrupt: no temp file is left
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _encode(img: np.ndarray, alpha: Optional[np.ndarray], ext: str, path: str) -> bytes:
    """File bytes of a BGR or grey image, with ``alpha`` (same dtype) when given."""
    if alpha is not None and img.ndim == 2 and ext == '.png':
        return _grey_alpha_png(img, alpha)
    if alpha is not None:  # OpenCV writes no 2-channel files
        img = np.dstack([cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img, alpha])
    ok, buf = cv2.imencode(ext, img)
    if not ok:
        raise ValueError(f"cannot encode an image as '{path}'")
    return buf.tobytes()


def _grey_alpha_png(grey: np.ndarray, alpha: np.ndarray) -> bytes:
    """A grey + alpha PNG (colour type 4) of 8- or 16-bit arrays, which OpenCV cannot write."""
    height, width = grey.shape
    samples = np.dstack([grey, alpha]).astype(f'>u{grey.dtype.itemsize}')  # PNG samples are big-endian
    rows = np.hstack([np.zeros((height, 1), np.uint8), samples.reshape(height, -1).view(np.uint8)])  # filter: none
    header = struct.pack('>IIBBBBB', width, height, 8 * grey.dtype.itemsize, _PNG_GREY_ALPHA, 0, 0, 0)
    return _PNG_SIGNATURE + b''.join(_png_chunk(tag, data) for tag, data in (
        (b'IHDR', header), (b'IDAT', zlib.compress(rows.tobytes(), 6)), (b'IEND', b'')))


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data))
