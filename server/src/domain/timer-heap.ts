// A binary min-heap of deadlines: the engine's one timer structure (lease expiries, cooldown ends,
// circuit re-opens, budget resets, waiter timeouts). Items carry their own position, so
// rescheduling and cancelling are O(log n) without a lookup.

export interface Scheduled {
  /** The instant (epoch ms) the item is due. */
  at: number;
  /** Index in the heap, -1 when not scheduled. */
  heapPos: number;
  /** Scheduling order, so items due at the same instant fire first-in first-out. */
  heapSeq: number;
}

export class TimerHeap<T extends Scheduled> {
  private readonly items: T[] = [];
  private seq = 0;

  peek(): T | undefined {
    return this.items[0];
  }

  schedule(item: T, at: number): void {
    item.at = at;
    item.heapSeq = this.seq++;
    if (item.heapPos >= 0) {
      this.fix(item.heapPos);
      return;
    }
    item.heapPos = this.items.length;
    this.items.push(item);
    this.up(item.heapPos);
  }

  cancel(item: T): void {
    const i = item.heapPos;
    if (i < 0) return;
    item.heapPos = -1;
    const last = this.items.pop()!;
    if (i === this.items.length) return;
    this.items[i] = last;
    last.heapPos = i;
    this.fix(i);
  }

  pop(): T | undefined {
    const top = this.items[0];
    if (top) this.cancel(top);
    return top;
  }

  private less(a: T, b: T): boolean {
    return a.at < b.at || (a.at === b.at && a.heapSeq < b.heapSeq);
  }

  private fix(i: number): void {
    if (!this.up(i)) this.down(i);
  }

  private up(i: number): boolean {
    const items = this.items;
    const item = items[i]!;
    let moved = false;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = items[parent]!;
      if (!this.less(item, p)) break;
      items[i] = p;
      p.heapPos = i;
      i = parent;
      moved = true;
    }
    items[i] = item;
    item.heapPos = i;
    return moved;
  }

  private down(i: number): void {
    const items = this.items;
    const n = items.length;
    const item = items[i]!;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const child = r < n && this.less(items[r]!, items[l]!) ? r : l;
      const c = items[child]!;
      if (!this.less(c, item)) break;
      items[i] = c;
      c.heapPos = i;
      i = child;
    }
    items[i] = item;
    item.heapPos = i;
  }
}
