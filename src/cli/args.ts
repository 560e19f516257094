import { ConfigError } from '../errors.js';

/** `H` or `HxW` in pixels. */
export function parseSize(text: string): [number, number] {
  const m = /^(\d+)(?:x(\d+))?$/.exec(text);
  const h = m ? Number(m[1]) : NaN;
  const w = m?.[2] ? Number(m[2]) : h;
  if (!(h >= 1 && w >= 1))
    throw new ConfigError(`--input '${text}': expected H or HxW in pixels, e.g. 224 or 480x640`);
  return [h, w];
}

/** A parser for an integer option of at least `min`, whose error names the option. */
export function integer(name: string, min: number) {
  return (text: string): number => {
    const v = Number(text);
    if (!/^\d+$/.test(text) || v < min)
      throw new ConfigError(`${name} '${text}': expected an integer >= ${min}`);
    return v;
  };
}

export const positiveInt = (name: string) => integer(name, 1);
