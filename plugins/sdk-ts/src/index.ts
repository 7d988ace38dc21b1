/// <reference path="./globals.d.ts" />
// Canopy's plugin SDK for TypeScript: what the Rust SDK (`plugins/sdk`) gives Rust plugins.
//
// A destination is an object with `describe`, `validateConfig`, `transform` and (optionally)
// `interpret`, taking typed inputs: a parsed `Event` and the integration's `Config`.
// `destination(...)` adapts it to the contract's raw exports:
//
//   export const plugin = destination({ describe, validateConfig, transform });
//
// The contract's own types (`PluginInfo`, `OutgoingRequest`, `Verdict`, …) are generated from
// `wit/` by `jco guest-types` into each plugin project, so they always match the contract the
// component is built against. See `plugins/README.md` in Canopy's repository.

import { log as hostLog } from 'canopy:destination/host@0.2.0';
import type {
  Config as WitConfig,
  ConfigError,
  Header,
  IncomingResponse,
  Method,
  OutgoingRequest,
  PluginInfo,
  RateLimit,
  Refusal,
  SettingKind,
  SettingSpec,
  Signature,
  Verdict,
} from 'canopy:destination/types@0.2.0';

import { type Event, type Json, parseEvent } from './events.ts';

export * from './events.ts';
export type {
  ConfigError,
  IncomingResponse,
  OutgoingRequest,
  PluginInfo,
  RateLimit,
  Refusal,
  SettingSpec,
  Verdict,
};

// ---------------------------------------------------------------------------------------
// Configuration

/** An integration's non-secret settings and the names of the secrets the admin has set. */
export class Config {
  constructor(
    readonly settings: { [name: string]: Json },
    readonly secretsPresent: readonly string[],
  ) {}

  /** Parses the contract's config record; throws a message when the settings are not an object. */
  static fromWit(config: WitConfig): Config {
    let settings: unknown = {};
    if (config.settings.trim() !== '') {
      try {
        settings = JSON.parse(config.settings);
      } catch (e) {
        throw new Error(`settings are not valid JSON: ${(e as Error).message}`);
      }
    }
    if (typeof settings !== 'object' || settings === null || Array.isArray(settings)) {
      throw new Error('settings must be a JSON object');
    }
    return new Config(settings as { [name: string]: Json }, config.secretsPresent);
  }

  /** A setting's raw value; `undefined` when absent or null. */
  get(name: string): Json | undefined {
    if (!Object.hasOwn(this.settings, name)) return undefined;
    const value = this.settings[name];
    return value === null ? undefined : value;
  }

  /** A text setting, trimmed; `undefined` when absent or blank. */
  text(name: string): string | undefined {
    const value = this.get(name);
    if (typeof value !== 'string') return undefined;
    const trimmed = value.trim();
    return trimmed === '' ? undefined : trimmed;
  }

  /** A text setting, or `fallback` when absent or blank. */
  textOr(name: string, fallback: string): string {
    return this.text(name) ?? fallback;
  }

  /** A boolean setting, or `fallback` when absent. */
  flag(name: string, fallback = false): boolean {
    const value = this.get(name);
    return typeof value === 'boolean' ? value : fallback;
  }

  /** Whether the admin has set the named secret (its value never enters the sandbox). */
  hasSecret(name: string): boolean {
    return this.secretsPresent.includes(name);
  }

  /** An error for every required setting or secret of `spec` that is missing. */
  missingRequired(spec: readonly SettingSpec[]): ConfigError[] {
    return spec
      .filter((s) => s.required)
      .filter((s) => (s.secret ? !this.hasSecret(s.name) : blank(this.get(s.name))))
      .map((s) => configError(s.name, `${s.label} is required`));
  }
}

function blank(value: Json | undefined): boolean {
  return value === undefined || (typeof value === 'string' && value.trim() === '');
}

/** A problem with one setting (`field`), or with the whole configuration (`''`). */
export function configError(field: string, message: string): ConfigError {
  return { field, message };
}

/** Builds one field of a plugin's settings form. */
export class Setting {
  private spec: SettingSpec;

  private constructor(name: string, label: string, kind: SettingKind, secret: boolean) {
    this.spec = {
      name,
      label,
      description: '',
      kind,
      required: false,
      secret,
      defaultValue: undefined,
      options: [],
    };
  }

  static text(name: string, label: string): Setting {
    return new Setting(name, label, 'text', false);
  }
  static url(name: string, label: string): Setting {
    return new Setting(name, label, 'url', false);
  }
  static integer(name: string, label: string): Setting {
    return new Setting(name, label, 'integer', false);
  }
  static boolean(name: string, label: string): Setting {
    return new Setting(name, label, 'boolean', false);
  }
  static choice(name: string, label: string, options: readonly string[]): Setting {
    const setting = new Setting(name, label, 'choice', false);
    setting.spec.options = [...options];
    return setting;
  }
  static stringMap(name: string, label: string): Setting {
    return new Setting(name, label, 'string-map', false);
  }
  static templateMap(name: string, label: string): Setting {
    return new Setting(name, label, 'template-map', false);
  }
  /** A secret: stored encrypted by the host, referenced by name in requests, never seen here. */
  static secret(name: string, label: string): Setting {
    return new Setting(name, label, 'text', true);
  }

  required(): Setting {
    this.spec.required = true;
    return this;
  }
  describe(description: string): Setting {
    this.spec.description = description;
    return this;
  }
  defaultValue(value: Json): Setting {
    this.spec.defaultValue = JSON.stringify(value);
    return this;
  }
  build(): SettingSpec {
    return { ...this.spec, options: [...this.spec.options] };
  }
}

/** What `describe` returns, with the optional parts optional. */
export interface Info {
  id: string;
  name: string;
  version: string;
  description: string;
  /** Canonical event types this plugin delivers; `['*']` (the default) for all of them. */
  events?: string[];
  /** Hosts requests may go to; `settings:<name>` allows the host of a URL setting. */
  allowedHosts: string[];
  settings?: Array<SettingSpec | Setting>;
  rateLimit?: RateLimit;
  /**
   * Resources beyond the host's defaults (64 MiB of memory, a 16 MiB component), granted up
   * to its operator's caps (256 and 64 MiB by default).
   */
  needs?: { memoryMib?: number; componentMib?: number };
}

/** The contract's plugin description from an `Info`. */
export function pluginInfo(info: Info): PluginInfo {
  return {
    id: info.id,
    name: info.name,
    version: info.version,
    description: info.description,
    events: info.events ?? ['*'],
    allowedHosts: info.allowedHosts,
    settings: (info.settings ?? []).map((s) => (s instanceof Setting ? s.build() : s)),
    rateLimit: info.rateLimit,
    needs: { memoryMib: info.needs?.memoryMib, componentMib: info.needs?.componentMib },
  };
}

// ---------------------------------------------------------------------------------------
// Requests

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A request under construction. Secrets are referenced by name (`secretHeader`); signatures
 * are asked of the host (`signHmacHex`, `signStandardWebhooks`); the host fills both in at
 * send time.
 */
export class Request {
  private headers: Header[] = [];
  private body: Uint8Array = new Uint8Array();
  private signatures: Signature[] = [];

  constructor(
    private method: Method,
    private url: string,
  ) {}

  static post(url: string): Request {
    return new Request('post', url);
  }

  /** A header with a literal value. */
  header(name: string, value: string): Request {
    this.headers.push({ name, value: [{ tag: 'text', val: value }] });
    return this;
  }

  /** A header whose value is `prefix` then the named secret: `secretHeader('Authorization', 'Bearer ', 'token')`. */
  secretHeader(name: string, prefix: string, secret: string): Request {
    const value: Header['value'] = prefix === '' ? [] : [{ tag: 'text', val: prefix }];
    value.push({ tag: 'secret', val: secret });
    this.headers.push({ name, value });
    return this;
  }

  /**
   * `Authorization: Basic base64(user:secret)` with the named secret as the password, made by
   * the host at send time (e.g. Customer.io's site id and API key). `user` must not contain `:`.
   */
  basicAuth(user: string, secret: string): Request {
    this.headers.push({ name: 'Authorization', value: [{ tag: 'basic-auth', val: { user, secret } }] });
    return this;
  }

  /** The body as raw bytes or text. */
  bytes(body: Uint8Array | string): Request {
    this.body = typeof body === 'string' ? encoder.encode(body) : body;
    return this;
  }

  /** The body as compact JSON. */
  json(body: Json | object): Request {
    return this.bytes(JSON.stringify(body));
  }

  /** Asks the host to add `header: hex(HMAC-SHA256(secret, body))`. */
  signHmacHex(header: string, secret: string): Request {
    this.signatures.push({ tag: 'hmac-sha256-hex', val: { header, secret } });
    return this;
  }

  /** Asks the host to add Standard Webhooks headers keyed with the named secret. */
  signStandardWebhooks(secret: string): Request {
    this.signatures.push({ tag: 'standard-webhooks', val: secret });
    return this;
  }

  build(): OutgoingRequest {
    return {
      method: this.method,
      url: this.url,
      headers: this.headers,
      body: this.body,
      signatures: this.signatures,
    };
  }
}

// ---------------------------------------------------------------------------------------
// Refusals

/** Thrown from `transform` to refuse an event; build one with `skip`, `invalidConfig` or `invalidEvent`. */
export class Refused extends Error {
  constructor(readonly payload: Refusal) {
    super(payload.val);
  }
}

/** The platform cannot take this event (e.g. no customer email); not an error. */
export function skip(reason: string): Refused {
  return new Refused({ tag: 'skip', val: reason });
}

/** The integration's settings cannot work. */
export function invalidConfig(reason: string): Refused {
  return new Refused({ tag: 'invalid-config', val: reason });
}

/** The event lacks what this destination needs. */
export function invalidEvent(reason: string): Refused {
  return new Refused({ tag: 'invalid-event', val: reason });
}

// ---------------------------------------------------------------------------------------
// Responses

/** How much of a response body a failure reason quotes. */
const REASON_EXCERPT_CHARS = 300;

/** A response header's value (names arrive lowercase). */
export function header(response: IncomingResponse, name: string): string | undefined {
  const wanted = name.toLowerCase();
  return response.headers.find(([n]) => n.toLowerCase() === wanted)?.[1];
}

/** `Retry-After` in seconds, when given as a number of seconds. */
export function retryAfterSeconds(response: IncomingResponse): number | undefined {
  const value = header(response, 'retry-after')?.trim();
  return value !== undefined && /^\+?\d+$/.test(value) && Number(value) <= 0xffffffff ? Number(value) : undefined;
}

/** The response body as text. */
export function bodyText(response: IncomingResponse): string {
  return decoder.decode(response.body);
}

export const delivered: Verdict = { tag: 'delivered' };

export function retry(reason: string, afterSeconds?: number): Verdict {
  return { tag: 'retry', val: { afterSeconds, reason } };
}

export function failed(reason: string): Verdict {
  return { tag: 'failed', val: reason };
}

/**
 * 2xx delivered; 408, 429 and 5xx retried (honouring `Retry-After`); any other status
 * failed, quoting the start of the body.
 */
export function defaultVerdict(response: IncomingResponse): Verdict {
  const status = response.status;
  if (status >= 200 && status <= 299) return delivered;
  if (status === 408 || status === 429 || (status >= 500 && status <= 599)) {
    return retry(`HTTP ${status}`, retryAfterSeconds(response));
  }
  const body = bodyText(response).trim();
  return failed(body === '' ? `HTTP ${status}` : `HTTP ${status}: ${[...body].slice(0, REASON_EXCERPT_CHARS).join('')}`);
}

/**
 * How a platform's HTTP API answer usually reads, in the platform's name: 2xx delivered;
 * 401/403 failed with `invalidCredentials`; 408, 429 and 5xx retried; any other status
 * failed with the platform's own error text (`errorDetails`).
 */
export function platformVerdict(response: IncomingResponse, platform: string, invalidCredentials: string): Verdict {
  const status = response.status;
  if (status >= 200 && status <= 299) return delivered;
  if (status === 401 || status === 403) return failed(invalidCredentials);
  if (status === 408 || status === 429 || (status >= 500 && status <= 599)) {
    return retry(`${platform} answered HTTP ${status}`, retryAfterSeconds(response));
  }
  const detail = errorDetails(response.body);
  return failed(
    detail === undefined
      ? `${platform} rejected the event (HTTP ${status})`
      : `${platform} rejected the event (HTTP ${status}): ${detail}`,
  );
}

/**
 * The `detail` (or `title`, `message`, `error`) of each entry of an error list such as
 * JSON:API's `errors[]`, or of a single error document, joined by "; ".
 */
export function errorDetails(body: Uint8Array): string | undefined {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(body));
  } catch {
    return undefined;
  }
  const describe = (v: unknown): string | undefined => {
    if (typeof v === 'string') return v;
    if (typeof v !== 'object' || v === null) return undefined;
    for (const key of ['detail', 'title', 'message', 'error']) {
      const text = (v as { [k: string]: unknown })[key];
      if (typeof text === 'string') return text;
    }
    return undefined;
  };
  const errors = typeof value === 'object' && value !== null ? (value as { errors?: unknown }).errors : undefined;
  const details = Array.isArray(errors)
    ? errors.map(describe).filter((d): d is string => d !== undefined)
    : typeof errors === 'string'
      ? [errors]
      : [describe(value)].filter((d): d is string => d !== undefined);
  return details.length > 0 ? details.join('; ') : undefined;
}

/** A number from a JSON number or numeric text (`50`, `"89.99"`); `undefined` for anything else. */
export function number(value: Json | undefined): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const text = value.trim();
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) return undefined;
  const parsed = Number(text);
  return Number.isFinite(parsed) ? parsed : undefined;
}

// ---------------------------------------------------------------------------------------
// Logging

/** Writes to the host's log, tagged with the plugin and delivery. Never log customer secrets. */
export const log = {
  debug: (message: string) => hostLog('debug', message),
  info: (message: string) => hostLog('info', message),
  warn: (message: string) => hostLog('warn', message),
  error: (message: string) => hostLog('error', message),
};

// ---------------------------------------------------------------------------------------
// The export

/** What a destination plugin implements. Every function is pure: same input, same output. */
export interface Destination {
  /** Identity, supported events, allowed hosts and the settings form. */
  describe(): Info;
  /** Problems with an integration's configuration; empty when it can work. */
  validateConfig(config: Config): ConfigError[];
  /** The request(s) that deliver `event`; throw `skip(…)`, `invalidConfig(…)` or `invalidEvent(…)` to refuse. */
  transform(event: Event, config: Config): Array<OutgoingRequest | Request>;
  /** What the platform's answer means. Defaults to `defaultVerdict`. */
  interpret?(response: IncomingResponse): Verdict;
}

/** The contract's `plugin` interface, as `export const plugin = destination(...)` exports it. */
export interface PluginExports {
  describe(): PluginInfo;
  validateConfig(config: WitConfig): ConfigError[];
  transform(event: string, config: WitConfig): OutgoingRequest[];
  interpret(response: IncomingResponse): Verdict;
}

/**
 * Adapts a `Destination` to the contract's raw exports: parses the event and settings once,
 * so that plugins only see typed data, and turns a thrown `Refused` into the refusal the
 * contract returns. Any other exception is a bug in the plugin: the call traps and the host
 * reports it.
 */
export function destination(plugin: Destination): PluginExports {
  return {
    describe() {
      return pluginInfo(plugin.describe());
    },
    validateConfig(config) {
      let parsed: Config;
      try {
        parsed = Config.fromWit(config);
      } catch (e) {
        return [configError('', (e as Error).message)];
      }
      return plugin.validateConfig(parsed);
    },
    transform(event, config) {
      let parsedEvent: Event;
      try {
        parsedEvent = parseEvent(event);
      } catch (e) {
        throw invalidEvent(`the event is not a canonical event: ${(e as Error).message}`);
      }
      let parsedConfig: Config;
      try {
        parsedConfig = Config.fromWit(config);
      } catch (e) {
        throw invalidConfig((e as Error).message);
      }
      return plugin.transform(parsedEvent, parsedConfig).map((r) => (r instanceof Request ? r.build() : r));
    },
    interpret(response) {
      return (plugin.interpret ?? defaultVerdict)(response);
    },
  };
}
