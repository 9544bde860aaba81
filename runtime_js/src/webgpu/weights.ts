/**
 * Streams verified weights into the plan's weight buffers (a ShardSink).
 *
 * Staging, not write-through: each shard in flight gets a GPU staging buffer
 * (COPY_SRC | COPY_DST, never bound to a kernel) that receives its chunks as they
 * arrive. Only when the loader commits the shard (its sha256 matched) are its part
 * ranges copied from staging into the weight buffers, on the GPU. A shard that fails
 * verification is discarded with its staging buffer's contents, so unverified bytes
 * never reach a buffer that a kernel reads. Cost: one shard-sized GPU buffer per
 * shard in flight (the loader's concurrency, 2 by default), freed after the load;
 * JavaScript memory stays at one chunk per shard in flight.
 */
import type { ShardLayout } from "../layout.js";
import type { ShardSink } from "../loader.js";
import type { Manifest } from "../manifest.js";
import { type WeightBlock, align, forEachBlockPiece } from "../plan.js";
import { BufferUsage } from "./gpu.js";

/** What happened to each shard (for progress, tests and diagnostics). */
export interface UploadLog {
  /** shards whose bytes were copied into weight buffers, in commit order */
  committed: number[];
  /** shards discarded after a failed verification (their bytes went nowhere) */
  discarded: number[];
  /** bytes copied into weight buffers */
  bytesToWeights: number;
}

export class StagingSink implements ShardSink {
  readonly log: UploadLog = { committed: [], discarded: [], bytesToWeights: 0 };
  private readonly free: GPUBuffer[] = [];
  private readonly all: GPUBuffer[] = [];
  private readonly inFlight = new Map<number, GPUBuffer>();
  private readonly stagingBytes: number;

  constructor(
    private readonly device: GPUDevice,
    private readonly manifest: Manifest,
    private readonly layout: ShardLayout,
    /** "tensor:part" -> weight buffers holding its bytes */
    private readonly blocks: Map<string, WeightBlock[]>,
    private readonly buffers: Map<string, GPUBuffer>,
  ) {
    this.stagingBytes = StagingSink.stagingBytes(manifest);
  }

  /** Size of one staging buffer: the largest shard. */
  static stagingBytes(manifest: Manifest): number {
    return align(Math.max(16, ...manifest.shards.map((s) => s.bytes)));
  }

  private staging(shard: number): GPUBuffer {
    let buf = this.inFlight.get(shard);
    if (!buf) {
      buf = this.free.pop();
      if (!buf) {
        buf = this.device.createBuffer({ label: "weights staging", size: this.stagingBytes, usage: BufferUsage.COPY_SRC | BufferUsage.COPY_DST });
        this.all.push(buf);
      }
      this.inFlight.set(shard, buf);
    }
    return buf;
  }

  write(shard: number, offset: number, chunk: Uint8Array): void {
    const buf = this.staging(shard);
    const tail = chunk.length & 3;
    if (!tail) {
      this.device.queue.writeBuffer(buf, offset, chunk);
      return;
    }
    // The shard's last chunk may end off a 4-byte boundary: pad it.
    const padded = new Uint8Array(chunk.length + 4 - tail);
    padded.set(chunk);
    this.device.queue.writeBuffer(buf, offset, padded);
  }

  commit(shard: number): void {
    const staging = this.inFlight.get(shard);
    if (!staging) return; // an empty shard
    const tensors = this.manifest.tensors;
    const enc = this.device.createCommandEncoder({ label: `shard ${shard} -> weights` });
    let bytes = 0;
    for (const span of this.layout.partsInShard(shard)) {
      const t = tensors[span.tensor];
      const part = t?.parts[span.part];
      if (!t || !part) throw new Error(`shard ${shard}: the layout names part ${span.part} of tensor ${span.tensor}, which the manifest lacks`);
      const key = `${t.name}:${part.name}`;
      forEachBlockPiece(this.blocks.get(key), span.offsetInPart, span.bytes, (blk, inBlock, inRange, length) => {
        const src = span.offsetInShard + inRange;
        const size = align(length, 4);
        if (src % 4 || inBlock % 4 || (length % 4 && inBlock + length < blk.bytes)) {
          throw new Error(`shard ${shard}: ${key} bytes ${span.offsetInPart + inRange}.. are not 4-byte aligned; the bundle breaks docs/bundle.md`);
        }
        enc.copyBufferToBuffer(staging, src, this.buffers.get(blk.buffer)!, inBlock, size);
        bytes += length;
      });
    }
    this.device.queue.submit([enc.finish()]);
    this.log.committed.push(shard);
    this.log.bytesToWeights += bytes;
    this.release(shard);
  }

  discard(shard: number): void {
    this.log.discarded.push(shard);
    this.release(shard);
  }

  private release(shard: number): void {
    const buf = this.inFlight.get(shard);
    if (!buf) return;
    this.inFlight.delete(shard);
    this.free.push(buf);
  }

  /** Frees the staging buffers (after the copies were submitted; WebGPU keeps them alive until done). */
  destroy(): void {
    for (const b of this.all) b.destroy();
    this.all.length = 0;
    this.free.length = 0;
    this.inFlight.clear();
  }
}
