// Braze destination, in TypeScript: each loyalty event becomes a Braze custom event on the
// customer's profile (REST API `POST /users/track`, one event per request), named with the
// event's display name (`Tier Changed`), timed with the event's timestamp, its fields as
// event properties.
//
// The customer is identified by email (the default) or by their Shopify customer id as the
// Braze `external_id`, as the integration's settings choose; an event without that
// identifier is skipped. Braze answers 201 with `errors` when it refuses an event it
// otherwise accepted the request for, so `interpret` reads the body, not just the status.

import {
  type Config,
  type ConfigError,
  type Event,
  type IncomingResponse,
  type Json,
  type Verdict,
  Request,
  Setting,
  bodyText,
  configError,
  destination,
  displayName,
  email,
  failed,
  header,
  invalidConfig,
  platformVerdict,
  retry,
  skip,
} from '@canopy/plugin-sdk';

const API_KEY = 'api_key';
const INSTANCE = 'instance';
const IDENTIFY_BY = 'identify_by';
const APP_ID = 'app_id';

/** Braze's REST endpoints by instance (Braze → Settings → APIs and Identifiers). */
const INSTANCES: Record<string, string> = {
  'US-01': 'rest.iad-01.braze.com',
  'US-02': 'rest.iad-02.braze.com',
  'US-03': 'rest.iad-03.braze.com',
  'US-04': 'rest.iad-04.braze.com',
  'US-05': 'rest.iad-05.braze.com',
  'US-06': 'rest.iad-06.braze.com',
  'US-07': 'rest.iad-07.braze.com',
  'US-08': 'rest.iad-08.braze.com',
  'EU-01': 'rest.fra-01.braze.eu',
  'EU-02': 'rest.fra-02.braze.eu',
  'AU-01': 'rest.au-01.braze.com',
};
const DEFAULT_INSTANCE = 'US-01';

const settings = [
  Setting.secret(API_KEY, 'REST API key')
    .required()
    .describe('Braze → Settings → APIs and Identifiers → API Keys; needs the users.track permission')
    .build(),
  Setting.choice(INSTANCE, 'Instance', Object.keys(INSTANCES))
    .describe('The Braze instance of your dashboard URL (dashboard-01 on US-01, and so on)')
    .defaultValue(DEFAULT_INSTANCE)
    .build(),
  Setting.choice(IDENTIFY_BY, 'Identify customers by', ['email', 'external_id'])
    .describe('`email`, or `external_id` set to the Shopify customer id')
    .defaultValue('email')
    .build(),
  Setting.text(APP_ID, 'App identifier')
    .describe('Optional: the Braze app the events are attributed to')
    .build(),
];

/** The user identifier Braze takes for this event, or why there is none. */
function identifier(event: Event, config: Config): { [key: string]: string } {
  const identifyBy = config.textOr(IDENTIFY_BY, 'email');
  if (identifyBy !== 'email' && identifyBy !== 'external_id') {
    throw invalidConfig(`cannot identify customers by ${identifyBy}`);
  }
  if (identifyBy === 'external_id') {
    const id = event.customer.shopify_customer_id;
    if (id === undefined || id.trim() === '') throw skip('the customer has no Shopify customer id for Braze');
    return { external_id: id };
  }
  const address = email(event);
  if (address === undefined) throw skip('Braze identifies customers by email and this one has none');
  return { email: address };
}

/** Braze event properties: the event's own fields and its type; nested values are kept. */
function properties(event: Event): { [key: string]: Json } {
  return { event_type: event.event, ...event.fields };
}

export const plugin = destination({
  describe() {
    return {
      id: 'braze',
      name: 'Braze',
      version: '0.1.0',
      description: "Sends loyalty events to Braze as custom events on the customer's profile",
      events: ['*'],
      allowedHosts: Object.values(INSTANCES),
      settings,
      // /users/track: 3,000 requests every 3 seconds per workspace.
      rateLimit: { requests: 3000, perSeconds: 3 },
    };
  },

  validateConfig(config: Config): ConfigError[] {
    const errors = config.missingRequired(settings);
    const instance = config.text(INSTANCE);
    if (instance !== undefined && !Object.hasOwn(INSTANCES, instance)) {
      errors.push(configError(INSTANCE, `Instance must be one of ${Object.keys(INSTANCES).join(', ')}`));
    }
    const identifyBy = config.text(IDENTIFY_BY);
    if (identifyBy !== undefined && identifyBy !== 'email' && identifyBy !== 'external_id') {
      errors.push(configError(IDENTIFY_BY, 'Identify customers by must be `email` or `external_id`'));
    }
    return errors;
  },

  transform(event: Event, config: Config) {
    if (!config.hasSecret(API_KEY)) throw invalidConfig('REST API key is required');
    const instance = config.textOr(INSTANCE, DEFAULT_INSTANCE);
    if (!Object.hasOwn(INSTANCES, instance)) throw invalidConfig(`unknown Braze instance ${instance}`);
    const host = INSTANCES[instance];
    const brazeEvent: { [key: string]: Json } = {
      ...identifier(event, config),
      name: displayName(event.event),
      time: event.timestamp,
      properties: properties(event),
    };
    const appId = config.text(APP_ID);
    if (appId !== undefined) brazeEvent.app_id = appId;
    return [
      Request.post(`https://${host}/users/track`)
        .secretHeader('Authorization', 'Bearer ', API_KEY)
        .header('Content-Type', 'application/json')
        .json({ events: [brazeEvent] }),
    ];
  },

  interpret(response: IncomingResponse): Verdict {
    const verdict = platformVerdict(response, 'Braze', 'Braze refused the REST API key (check it and its users.track permission)');
    if (verdict.tag === 'retry' && verdict.val.afterSeconds === undefined) {
      // Braze's own rate-limit header, in seconds, where it sends one.
      const wait = header(response, 'x-ratelimit-retry-after')?.trim();
      if (wait !== undefined && /^\d+$/.test(wait)) return retry(verdict.val.reason, Number(wait));
    }
    if (verdict.tag !== 'delivered') return verdict;
    // A 2xx can still carry per-event errors: the one event sent was not recorded.
    let answer: unknown;
    try {
      answer = JSON.parse(bodyText(response));
    } catch {
      return verdict;
    }
    const errors = (answer as { errors?: unknown } | null)?.errors;
    if (Array.isArray(errors) && errors.length > 0) {
      const types = errors.map((e) => (typeof e === 'object' && e !== null && 'type' in e ? String(e.type) : JSON.stringify(e)));
      return failed(`Braze did not record the event: ${types.join('; ')}`);
    }
    return verdict;
  },
});
