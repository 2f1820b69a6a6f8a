// Alert receivers: pure payload builders and answer classifiers, one file per vendor.
export type { ClassifyFn, OutgoingRequest, RenderFn, Verdict } from './types.js';
export { ReceiverError } from './shared.js';
export { renderPagerDuty, classifyPagerDuty, pagerDutyDedupKey, type PagerDutyConfig } from './pagerduty.js';
export { renderSlack, classifySlack, type SlackConfig } from './slack.js';
export { renderWebhook, classifyWebhook, webhookId, webhookKey, webhookSignature, type WebhookConfig } from './webhook.js';
export { renderAlertmanager, classifyAlertmanager, type AlertmanagerConfig } from './alertmanager.js';
export { renderConsole } from './console.js';
