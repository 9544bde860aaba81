"""GPTQ: quantize a weight matrix column by column, compensating each column's rounding
error on the columns not yet quantized, weighted by the inverse Hessian of the layer's
inputs (Frantar et al., 2022). The output uses the same stored formats as plain
quantization: only the choice of codes and group parameters changes.
"""

from __future__ import annotations

import numpy as np

from .formats import Format

BLOCK = 128  # columns updated lazily together (a multiple of every group size)


def inverse_hessian_factor(hessian: np.ndarray, damp: float) -> tuple[np.ndarray, np.ndarray]:
    """Upper Cholesky factor U of H^-1 (H^-1 = U^T U) after dampening, and the mask of
    input columns that never saw a non-zero activation."""
    h = hessian.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h[np.diag_indices_from(h)] += damp * np.mean(np.diag(h))
    for _ in range(4):
        try:
            hinv = np.linalg.inv(h)
            return np.linalg.cholesky(hinv).T, dead
        except np.linalg.LinAlgError:  # not positive definite: dampen more
            h[np.diag_indices_from(h)] += damp * np.mean(np.diag(h))
    raise np.linalg.LinAlgError("Hessian is not positive definite even after dampening")


def gptq_quantize(w: np.ndarray, hessian: np.ndarray, fmt: Format, damp: float = 0.01) -> dict[str, np.ndarray]:
    """w [rows, cols], hessian = X^T X over calibration inputs X [tokens, cols] -> parts."""
    rows, cols = w.shape
    g = fmt.group
    u, dead = inverse_hessian_factor(hessian, damp)
    u = u.astype(np.float32)
    W = w.astype(np.float32).copy()
    W[:, dead] = 0.0
    codes = np.zeros((rows, cols), np.uint8)
    scales = np.zeros((rows, cols // g), np.float32)
    mins = np.zeros((rows, cols // g), np.float32) if fmt.asymmetric else None
    for b0 in range(0, cols, BLOCK):
        b1 = min(b0 + BLOCK, cols)
        Wb = W[:, b0:b1]  # a view: updates land in W
        err = np.zeros((rows, b1 - b0), np.float32)
        for j in range(b1 - b0):
            col = b0 + j
            if col % g == 0:  # group parameters from the already-compensated weights
                s, m = fmt.group_params(Wb[:, j:j + g])
                scales[:, col // g] = s
                if mins is not None:
                    mins[:, col // g] = m
            q, deq = fmt.round_column(Wb[:, j], s, m)
            codes[:, col] = q
            e = (Wb[:, j] - deq) / u[col, col]
            Wb[:, j + 1:] -= np.outer(e, u[col, col + 1:b1])
            err[:, j] = e
        W[:, b1:] -= err @ u[b0:b1, b1:]
    return fmt.assemble(codes, scales, mins)
