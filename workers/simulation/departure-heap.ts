/**
 * The busy servers' departure times as a binary min-heap in a preallocated Float64Array
 * (one slot per server), so the simulation's hot loop allocates nothing. The engine keeps
 * the heap's size itself (it is the number of busy servers); these functions only move
 * times around.
 */

/** Add departure time t to a heap of `size` entries (the array has room for one more). */
export function pushDeparture(heap: Float64Array, size: number, t: number): void {
  let i = size;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    const p = heap[parent]!;
    if (p <= t) break;
    heap[i] = p;
    i = parent;
  }
  heap[i] = t;
}

/** Replace the earliest departure of a heap of `size` entries with t and restore heap order. */
export function replaceEarliest(heap: Float64Array, size: number, t: number): void {
  let i = 0;
  for (;;) {
    const left = 2 * i + 1;
    if (left >= size) break;
    const right = left + 1;
    let child = left;
    let cv = heap[left]!;
    if (right < size) {
      const rv = heap[right]!;
      if (rv < cv) {
        child = right;
        cv = rv;
      }
    }
    if (cv >= t) break;
    heap[i] = cv;
    i = child;
  }
  heap[i] = t;
}
