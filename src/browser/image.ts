import { toRgb, type RgbImage } from '../data/image.js';

/**
 * Decodes an image file with the browser's decoders (PNG, JPEG, WebP, GIF, ...) without colour management,
 * so that PNG pixels are the file's, as the Node decoder reads them. Errors start with `name`.
 */
export async function decodeImageFile(
  blob: Blob,
  name = blob instanceof File ? blob.name : 'image',
): Promise<RgbImage> {
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (e) {
    throw new Error(`${name}: not an image this browser can decode (${(e as Error).message})`);
  }
  try {
    return imageFromSource(bitmap, bitmap.width, bitmap.height);
  } finally {
    bitmap.close();
  }
}

/**
 * The RGB pixels of anything a canvas can draw (an ImageBitmap, a video frame, an <img>). Alpha is dropped, as
 * PIL's convert('RGB') does; a canvas keeps colours premultiplied, so only translucent pixels may differ.
 */
export function imageFromSource(source: CanvasImageSource, width: number, height: number): RgbImage {
  const canvas =
    typeof OffscreenCanvas !== 'undefined'
      ? new OffscreenCanvas(width, height)
      : Object.assign(document.createElement('canvas'), { width, height });
  const ctx = canvas.getContext('2d', { willReadFrequently: true }) as
    OffscreenCanvasRenderingContext2D | CanvasRenderingContext2D | null;
  if (!ctx) throw new Error('this browser gives no 2D canvas to read the image pixels from');
  ctx.drawImage(source, 0, 0, width, height);
  const { data } = ctx.getImageData(0, 0, width, height);
  return toRgb(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height, 4);
}
