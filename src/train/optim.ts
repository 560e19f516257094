/**
 * Optimizers and learning-rate schedules, with PyTorch's update rules (torch.optim.SGD, torch.optim.AdamW)
 * so that a recipe written for PyTorch means the same thing here. Parameters are updated in place.
 */
import { ConfigError } from '../errors.js';
import { Tensor } from '../tensor/tensor.js';

/**
 * The authors' rule: no weight decay on BN parameters and biases. Those are exactly the 1-D parameters of
 * these models, and the shape is all an optimizer sees.
 */
export const decaysByDefault = (_name: string, shape: readonly number[]): boolean => shape.length > 1;

/** SGD's whole rule (torch.optim.SGD), for backends that run the update on the device. */
export interface SgdRule {
  momentum: number;
  dampening: number;
  nesterov: boolean;
  weightDecay: number;
  decays(name: string, shape: readonly number[]): boolean;
}

/** AdamW's whole rule (torch.optim.AdamW), for backends that run the update on the device. */
export interface AdamWRule {
  betas: readonly [number, number];
  eps: number;
  weightDecay: number;
  decays(name: string, shape: readonly number[]): boolean;
}

export interface Optimizer {
  readonly kind: 'sgd' | 'adamw';
  /** The update rule, so that a device may run it itself (TrainBackend.step): sgd() sets `sgd`, adamw() `adamw`. */
  readonly sgd?: SgdRule;
  readonly adamw?: AdamWRule;
  /** One update of every parameter that has a gradient, at learning rate `lr`. */
  step(params: ReadonlyMap<string, Tensor>, grads: ReadonlyMap<string, Tensor>, lr: number): void;
  /** Everything the next steps depend on, as named tensors (a checkpoint stores them as safetensors). */
  state(): Map<string, Tensor>;
  /** Replaces the state with one from `state()`; a resumed run then continues exactly. */
  loadState(state: ReadonlyMap<string, Tensor>): void;
}

export interface SgdOptions {
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
  /** Which parameters get weight decay; default: every parameter with more than one dimension. */
  decays?: (name: string, shape: readonly number[]) => boolean;
}

export interface AdamWOptions {
  betas?: readonly [number, number];
  eps?: number;
  weightDecay?: number;
  decays?: (name: string, shape: readonly number[]) => boolean;
}

function check(what: string, v: number, lo: number, hi = Infinity): void {
  if (!(v >= lo && v <= hi)) throw new ConfigError(`${what} ${v} is not in [${lo}, ${hi}]`);
}

/** Each parameter's state tensors, named `<slot>.<parameter>` so they sit beside the weights' names. */
class NamedState {
  readonly map = new Map<string, Tensor>();
  get(slot: string, name: string): Tensor | undefined {
    return this.map.get(`${slot}.${name}`);
  }
  make(slot: string, name: string, like: Tensor): Tensor {
    const t = new Tensor(like.shape);
    this.map.set(`${slot}.${name}`, t);
    return t;
  }
  copy(): Map<string, Tensor> {
    return new Map([...this.map].map(([k, t]) => [k, new Tensor(t.shape, t.data.slice())]));
  }
  load(state: ReadonlyMap<string, Tensor>, slots: readonly string[]): void {
    for (const key of state.keys()) {
      if (!slots.some((s) => key.startsWith(`${s}.`)))
        throw new ConfigError(`optimizer state: unexpected tensor '${key}' (slots: ${slots.join(', ')})`);
    }
    this.map.clear();
    for (const [k, t] of state) this.map.set(k, new Tensor(t.shape, t.data.slice()));
  }
}

/**
 * torch.optim.SGD: g = grad + wd p (where decay applies); buf = g on the first step, then
 * buf = momentum buf + (1 - dampening) g; the step is buf, or g + momentum buf with Nesterov; p -= lr step.
 */
export function sgd(o: SgdOptions = {}): Optimizer {
  const momentum = o.momentum ?? 0;
  const dampening = o.dampening ?? 0;
  const wd = o.weightDecay ?? 0;
  const nesterov = o.nesterov ?? false;
  const decays = o.decays ?? decaysByDefault;
  check('momentum', momentum, 0, 1);
  check('weight decay', wd, 0);
  if (nesterov && (momentum <= 0 || dampening !== 0))
    throw new ConfigError('Nesterov momentum needs momentum > 0 and dampening 0');
  const state = new NamedState();
  return {
    kind: 'sgd',
    sgd: { momentum, dampening, nesterov, weightDecay: wd, decays },
    step(params, grads, lr) {
      for (const [name, p] of params) {
        const grad = grads.get(name);
        if (!grad) continue;
        const d = wd && decays(name, p.shape) ? wd : 0;
        const x = p.data;
        const gd = grad.data;
        if (momentum === 0) {
          for (let i = 0; i < x.length; i++) x[i] = x[i]! - lr * (gd[i]! + d * x[i]!);
          continue;
        }
        const first = !state.get('momentum_buffer', name);
        const buf = (state.get('momentum_buffer', name) ?? state.make('momentum_buffer', name, p)).data;
        for (let i = 0; i < x.length; i++) {
          const g = gd[i]! + d * x[i]!;
          // The buffer is float32, as in PyTorch: Nesterov reads it back after rounding.
          buf[i] = first ? g : momentum * buf[i]! + (1 - dampening) * g;
          x[i] = x[i]! - lr * (nesterov ? g + momentum * buf[i]! : buf[i]!);
        }
      }
    },
    state: () => state.copy(),
    loadState: (s) => state.load(s, ['momentum_buffer']),
  };
}

/**
 * torch.optim.AdamW: p *= 1 - lr wd (decoupled decay, where it applies); m, v are the moving averages of
 * g and g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 */
export function adamw(o: AdamWOptions = {}): Optimizer {
  const [b1, b2] = o.betas ?? [0.9, 0.999];
  const eps = o.eps ?? 1e-8;
  const wd = o.weightDecay ?? 0.01;
  const decays = o.decays ?? decaysByDefault;
  check('beta1', b1, 0, 1);
  check('beta2', b2, 0, 1);
  check('weight decay', wd, 0);
  const state = new NamedState();
  return {
    kind: 'adamw',
    adamw: { betas: [b1, b2], eps, weightDecay: wd, decays },
    step(params, grads, lr) {
      for (const [name, p] of params) {
        const grad = grads.get(name);
        if (!grad) continue;
        // The step count is per parameter, as in PyTorch; a float32 scalar counts exactly to 2^24.
        const stepT = state.get('step', name) ?? state.make('step', name, new Tensor([]));
        const t = ++stepT.data[0]!;
        const m = (state.get('exp_avg', name) ?? state.make('exp_avg', name, p)).data;
        const v = (state.get('exp_avg_sq', name) ?? state.make('exp_avg_sq', name, p)).data;
        const decay = wd && decays(name, p.shape) ? 1 - lr * wd : 1;
        const stepSize = lr / (1 - b1 ** t);
        const bc2 = Math.sqrt(1 - b2 ** t);
        const x = p.data;
        const gd = grad.data;
        for (let i = 0; i < x.length; i++) {
          const g = gd[i]!;
          m[i] = b1 * m[i]! + (1 - b1) * g;
          v[i] = b2 * v[i]! + (1 - b2) * g * g;
          x[i] = x[i]! * decay - (stepSize * m[i]!) / (Math.sqrt(v[i]!) / bc2 + eps);
        }
      }
    },
    state: () => state.copy(),
    loadState: (s) => state.load(s, ['step', 'exp_avg', 'exp_avg_sq']),
  };
}

export type ScheduleKind = 'linear' | 'cosine' | 'step' | 'constant';

export interface ScheduleOptions {
  kind: ScheduleKind;
  /** The peak learning rate (after any warmup). */
  lr: number;
  totalSteps: number;
  /** Steps of linear warmup from lr / warmupSteps to lr, in front of the schedule; the schedule spans the rest. */
  warmupSteps?: number;
  /** 'step': multiply by `gamma` every `stepSize` steps (default: a third of the schedule, gamma 0.1). */
  stepSize?: number;
  gamma?: number;
}

/**
 * The learning rate at each step (0-based). 'linear' is the paper's: lr (1 - t / T), reaching 0 at the end
 * (the authors' LambdaLR); 'cosine' is lr (1 + cos(pi t / T)) / 2.
 */
export function lrSchedule(o: ScheduleOptions): (step: number) => number {
  const warmup = o.warmupSteps ?? 0;
  check('learning rate', o.lr, 0);
  if (!Number.isInteger(o.totalSteps) || o.totalSteps < 1)
    throw new ConfigError(`total steps must be a positive integer, got ${o.totalSteps}`);
  if (!Number.isInteger(warmup) || warmup < 0 || warmup >= o.totalSteps)
    throw new ConfigError(`warmup ${warmup} must be an integer in [0, ${o.totalSteps}) steps`);
  const span = o.totalSteps - warmup;
  const stepSize = o.stepSize ?? Math.max(1, Math.ceil(span / 3));
  const gamma = o.gamma ?? 0.1;
  const main: Record<ScheduleKind, (t: number) => number> = {
    constant: () => o.lr,
    linear: (t) => o.lr * Math.max(0, 1 - t / span),
    cosine: (t) => (o.lr * (1 + Math.cos(Math.PI * Math.min(1, t / span)))) / 2,
    step: (t) => o.lr * gamma ** Math.floor(t / stepSize),
  };
  const f = main[o.kind];
  if (!f) throw new ConfigError(`schedule '${o.kind}': expected one of ${Object.keys(main).join(', ')}`);
  return (step) => (step < warmup ? (o.lr * (step + 1)) / warmup : f(step - warmup));
}
