/**
 * Where each tensor part lives in the shards (docs/bundle.md, "Shards").
 *
 * The shards, concatenated in manifest order, form one logical byte stream. A tensor
 * starts at `offset` in shard `shard`; one larger than the shard size starts at
 * offset 0 and continues at offset 0 of the following shards, which is exactly
 * "contiguous in the stream". So every part is one range of stream coordinates and a
 * chunk `(shard, offsetInShard, bytes)` is mapped onto parts by range intersection.
 * Stream coordinates are plain numbers: exact far beyond any model size.
 */
import type { Manifest } from "./manifest.js";

/** One contiguous piece of a tensor part inside one shard. */
export interface PartSpan {
  tensor: number;
  part: number;
  /** byte offset of this piece inside the part */
  offsetInPart: number;
  /** byte offset of this piece inside the shard */
  offsetInShard: number;
  bytes: number;
}

interface PartRange {
  start: number;
  end: number;
  tensor: number;
  part: number;
}

export class ShardLayout {
  /** stream coordinate of each shard's first byte */
  readonly shardStart: number[];
  readonly totalBytes: number;
  private readonly ranges: PartRange[];

  constructor(manifest: Manifest) {
    this.shardStart = [];
    let pos = 0;
    for (const s of manifest.shards) {
      this.shardStart.push(pos);
      pos += s.bytes;
    }
    this.totalBytes = pos;
    this.ranges = [];
    manifest.tensors.forEach((t, ti) => {
      const base = this.shardBounds(t.shard)[0] + t.offset;
      t.parts.forEach((p, pi) => {
        if (p.bytes > 0) this.ranges.push({ start: base + p.offset, end: base + p.offset + p.bytes, tensor: ti, part: pi });
      });
    });
    this.ranges.sort((a, b) => a.start - b.start);
  }

  /**
   * Calls `fn` for every part piece that `chunk` (at `offsetInShard` of shard `shard`)
   * covers, with the matching subarray of `chunk` (no copy). Padding between parts is
   * skipped.
   */
  route(
    shard: number,
    offsetInShard: number,
    chunk: Uint8Array,
    fn: (tensor: number, part: number, offsetInPart: number, bytes: Uint8Array) => void,
  ): void {
    const g0 = this.shardBounds(shard)[0] + offsetInShard;
    this.overlaps(g0, g0 + chunk.length, (r, a, b) => fn(r.tensor, r.part, a - r.start, chunk.subarray(a - g0, b - g0)));
  }

  /** Every part piece stored in shard `shard`, in shard order (e.g. for a staging-buffer copy). */
  partsInShard(shard: number): PartSpan[] {
    const [s0, s1] = this.shardBounds(shard);
    const out: PartSpan[] = [];
    this.overlaps(s0, s1, (r, a, b) => out.push({ tensor: r.tensor, part: r.part, offsetInPart: a - r.start, offsetInShard: a - s0, bytes: b - a }));
    return out;
  }

  /** The shards that hold any byte of tensor `tensor`. */
  shardsOfTensor(tensor: number): number[] {
    const out = new Set<number>();
    for (const r of this.ranges) {
      if (r.tensor !== tensor) continue;
      for (let s = this.shardAt(r.start); (this.shardStart[s] ?? Infinity) < r.end; s++) out.add(s);
    }
    return [...out].sort((a, b) => a - b);
  }

  /** Stream coordinates [start, end) of shard `shard`. */
  private shardBounds(shard: number): [number, number] {
    const start = this.shardStart[shard];
    if (start === undefined) throw new RangeError(`no shard ${shard} (the bundle has ${this.shardStart.length})`);
    return [start, this.shardStart[shard + 1] ?? this.totalBytes];
  }

  /** Calls fn for every range overlapping [g0, g1), with the overlap [a, b). */
  private overlaps(g0: number, g1: number, fn: (r: PartRange, a: number, b: number) => void): void {
    for (let i = this.firstEndingAfter(g0); i < this.ranges.length; i++) {
      const r = this.ranges[i]!; // i < ranges.length
      if (r.start >= g1) break;
      const a = Math.max(g0, r.start);
      const b = Math.min(g1, r.end);
      if (a < b) fn(r, a, b);
    }
  }

  private shardAt(pos: number): number {
    let lo = 0;
    let hi = this.shardStart.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.shardStart[mid]! <= pos) lo = mid; // lo < mid <= hi < length
      else hi = mid - 1;
    }
    return lo;
  }

  /** Index of the first range whose end lies after `pos` (ranges do not overlap). */
  private firstEndingAfter(pos: number): number {
    let lo = 0;
    let hi = this.ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.ranges[mid]!.end <= pos) lo = mid + 1; // mid < hi <= length
      else hi = mid;
    }
    return lo;
  }
}
