// Shared settings for the Switchboard k6 scripts. Everything comes from the
// environment so the same scripts run against a laptop or a Kubernetes
// ingress:
//   TARGET   WebSocket base URL            (default ws://127.0.0.1:8080/ws)
//   API      HTTP API base URL             (default http://127.0.0.1:8080)
//   API_KEY  Bearer key for the HTTP API   (default $SWITCHBOARD_API_KEY)
//   BIZ      bizCode used by the test      (default k6)
//   VUS, DURATION                          (per script defaults)
//   TOKEN    connection token, if the deployment checks JWTs
export const TARGET = __ENV.TARGET || 'ws://127.0.0.1:8080/ws';
export const API = __ENV.API || 'http://127.0.0.1:8080';
export const API_KEY = __ENV.API_KEY || __ENV.SWITCHBOARD_API_KEY || '';
export const BIZ = __ENV.BIZ || 'k6';
export const VUS = parseInt(__ENV.VUS || '10', 10);
export const DURATION = __ENV.DURATION || '30s';

// A run-unique prefix so parallel runs never share clientIds.
export const RUN = __ENV.RUN || `r${Date.now().toString(36)}`;

export function wsUrl(clientId, groups) {
  let url = `${TARGET}?bizCode=${encodeURIComponent(BIZ)}&clientId=${encodeURIComponent(clientId)}`;
  if (groups) url += `&group=${encodeURIComponent(groups)}`;
  if (__ENV.TOKEN) url += `&token=${encodeURIComponent(__ENV.TOKEN)}`;
  return url;
}

export function apiHeaders() {
  return {
    'Content-Type': 'application/json',
    systemId: BIZ,
    Authorization: `Bearer ${API_KEY}`,
  };
}
