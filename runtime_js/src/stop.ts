/**
 * Stop strings over streamed text. A stop string may arrive split across deltas, so
 * text that could be the start of one is held back until it is known not to be.
 * The stop string and everything after it are never emitted (OpenAI semantics).
 */
export class StopMatcher {
  private held = "";
  private stopped = false;
  private readonly stops: string[];

  constructor(stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** Feeds a delta; returns the text that is safe to emit and whether a stop string was hit. */
  push(delta: string): { text: string; stop: boolean } {
    if (this.stopped) return { text: "", stop: true };
    const text = this.held + delta;
    if (this.stops.length === 0) return { text, stop: false };
    let cut = -1;
    for (const s of this.stops) {
      const at = text.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.held = "";
      return { text: text.slice(0, cut), stop: true };
    }
    const keep = this.partialSuffix(text);
    this.held = text.slice(text.length - keep);
    return { text: text.slice(0, text.length - keep), stop: false };
  }

  /** Text held back at the end of generation (it did not become a stop string). */
  flush(): string {
    const t = this.stopped ? "" : this.held;
    this.held = "";
    return t;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
  private partialSuffix(text: string): number {
    let best = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, text.length); n > best; n--) {
        if (text.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
