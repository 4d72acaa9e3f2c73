// The `server` tag on cells: toggled on every selected cell together (all get it, unless
// all have it: then all lose it), as JupyterLab's own tag editor writes metadata.tags.

export const SERVER_TAG = 'server';

export interface TaggableCell {
  getMetadata(key: string): unknown;
  setMetadata(key: string, value: unknown): void;
  deleteMetadata(key: string): unknown;
}

export function hasServerTag(cell: TaggableCell): boolean {
  const tags = cell.getMetadata('tags');
  return Array.isArray(tags) && tags.includes(SERVER_TAG);
}

/** Returns whether the cells now have the tag. */
export function toggleServerTag(cells: TaggableCell[]): boolean {
  const add = !cells.every(hasServerTag);
  for (const cell of cells) {
    const raw = cell.getMetadata('tags');
    const tags: string[] = Array.isArray(raw) ? raw.filter((t): t is string => typeof t === 'string') : [];
    const next = add ? (tags.includes(SERVER_TAG) ? tags : [...tags, SERVER_TAG]) : tags.filter(t => t !== SERVER_TAG);
    if (next.length) {
      cell.setMetadata('tags', next);
    } else {
      cell.deleteMetadata('tags');
    }
  }
  return add;
}
