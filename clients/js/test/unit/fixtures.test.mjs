// The SDK's frame types, encoder and decoder against the golden fixtures of
// crates/protocol (one file per frame kind and direction), which the Rust
// protocol crate parses and renders with the gateway's own code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { decodeClientFrame, decodeServerFrame, encodeClientFrame, FrameError, Mode } from '../../dist/switchboard.js';

const dir = fileURLToPath(new URL('../../../../crates/protocol/fixtures/frames/', import.meta.url));

/** Each fixture with its frames as raw texts (exact bytes, from the file). */
function fixtures() {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((name) => {
      const text = readFileSync(dir + name, 'utf8');
      const fixture = JSON.parse(text);
      // The frames exactly as written: one per line inside "frames": [ ... ].
      const body = text.slice(text.indexOf('"frames": [') + '"frames": ['.length, text.lastIndexOf(']'));
      const raws = body
        .split('\n')
        .map((l) => l.trim().replace(/,$/, ''))
        .filter((l) => l !== '');
      assert.equal(raws.length, fixture.frames.length, `${name}: one frame per line`);
      return { name, ...fixture, raws };
    });
}

test('every frame kind of both directions has a fixture', () => {
  const have = new Set(fixtures().map((f) => `${f.direction}/${f.mode}`));
  const client = [Mode.Heartbeat, Mode.Ack, Mode.Unicast, Mode.Group, Mode.Broadcast, Mode.Upstream].map((m) => `client-to-gateway/${m}`);
  const gateway = [Mode.Welcome, Mode.Heartbeat, Mode.Reply, Mode.Unicast, Mode.Group, Mode.Broadcast, Mode.Presence, Mode.Receipt].map(
    (m) => `gateway-to-client/${m}`,
  );
  assert.deepEqual([...have].sort(), [...client, ...gateway].sort());
});

test('gateway frames decode to exactly their fields', () => {
  for (const f of fixtures().filter((f) => f.direction === 'gateway-to-client')) {
    for (const raw of f.raws) {
      const decoded = decodeServerFrame(raw);
      assert.equal(decoded.mode, f.mode, `${f.name}: ${raw}`);
      // Nothing lost, nothing made up: the decoded frame is the JSON itself.
      assert.deepEqual(decoded, JSON.parse(raw), `${f.name}: ${raw}`);
    }
  }
});

test('client frames encode to the gateway bytes and decode back', () => {
  for (const f of fixtures().filter((f) => f.direction === 'client-to-gateway')) {
    for (const raw of f.raws) {
      const decoded = decodeClientFrame(raw);
      assert.equal(decoded.mode, f.mode, `${f.name}: ${raw}`);
      assert.deepEqual(decoded, JSON.parse(raw), `${f.name}: ${raw}`);
      assert.equal(encodeClientFrame(decoded), raw, `${f.name}: the SDK writes other bytes`);
    }
  }
});

test('malformed gateway frames are refused with a FrameError', () => {
  const bad = [
    'not json',
    '[1]',
    '{"mode":7}',
    '{"mode":0,"code":0,"msg":"success","data":{"clientId":"c1"}}',
    '{"mode":2,"msgId":"1","code":"0","msg":"success","data":null}',
    '{"mode":100,"msgId":"1","from":"a","ts":1}',
    '{"mode":200,"msgId":"1","from":"a","content":1,"ts":1}',
    '{"mode":400,"event":"away","clientId":"c1","group":null}',
    '{"mode":300,"msgId":"1","from":"a","content":1,"ts":1,"seq":"9"}',
  ];
  for (const text of bad) assert.throws(() => decodeServerFrame(text), FrameError, text);
  // Unknown fields are ignored (SPEC §2).
  assert.deepEqual(decodeServerFrame('{"mode":1,"msgId":"h","ts":5,"extra":true}'), { mode: 1, msgId: 'h', ts: 5 });
});
