// Template destination in TypeScript — `canopy plugin new --lang ts` starts a project from
// this file; change it into your platform's mapping.
//
// POSTs the canonical event, as JSON, to the URL in the `url` setting, with an optional
// bearer token and an optional HMAC signature of the body. It uses every part of the SDK a
// real destination needs: the settings form, config validation, a skip, secret references,
// host-side signing, and response interpretation.

import {
  type Config,
  type ConfigError,
  type Event,
  type IncomingResponse,
  type Verdict,
  Request,
  Setting,
  configError,
  defaultVerdict,
  destination,
  displayName,
  email,
  eventJson,
  invalidConfig,
  skip,
} from '@canopy/plugin-sdk';

const URL = 'url';
const TOKEN = 'token';
const SIGNING_SECRET = 'signing_secret';

const settings = [
  Setting.url(URL, 'Endpoint URL')
    .required()
    .describe('Where events are POSTed, e.g. https://hooks.example.com/loyalty')
    .build(),
  Setting.boolean('require_email', 'Only customers with an email')
    .describe('Skip events about anonymous customers')
    .defaultValue(false)
    .build(),
  Setting.secret(TOKEN, 'Bearer token').describe('Sent as `Authorization: Bearer <token>`').build(),
  Setting.secret(SIGNING_SECRET, 'Signing secret')
    .describe('Signs the body as `X-Signature: <hex HMAC-SHA256>`')
    .build(),
];

export const plugin = destination({
  describe() {
    return {
      id: 'template-ts',
      name: 'Template (TypeScript)',
      version: '0.1.0',
      description: 'POSTs the canonical event as JSON to a URL',
      events: ['*'],
      allowedHosts: [`settings:${URL}`],
      settings,
    };
  },

  validateConfig(config: Config): ConfigError[] {
    const errors = config.missingRequired(settings);
    const url = config.text(URL);
    if (url !== undefined && !(url.startsWith('https://') || url.startsWith('http://'))) {
      errors.push(configError(URL, 'Endpoint URL must start with https:// or http://'));
    }
    return errors;
  },

  transform(event: Event, config: Config) {
    const url = config.text(URL);
    if (url === undefined) throw invalidConfig('Endpoint URL is required');
    if (config.flag('require_email') && email(event) === undefined) {
      throw skip('the customer has no email');
    }
    const request = Request.post(url)
      .header('Content-Type', 'application/json')
      .header('X-Event-Type', event.event)
      .header('X-Event-Name', displayName(event.event))
      .json(eventJson(event));
    if (config.hasSecret(TOKEN)) request.secretHeader('Authorization', 'Bearer ', TOKEN);
    if (config.hasSecret(SIGNING_SECRET)) request.signHmacHex('X-Signature', SIGNING_SECRET);
    return [request];
  },

  interpret(response: IncomingResponse): Verdict {
    return defaultVerdict(response);
  },
});
