// The official Node client, @google-cloud/tasks, unchanged, against the local emulator.
//
//   node tests/node/client.mjs HOST:PORT RECEIVER_URL [QUEUE_ID]
//
// HOST:PORT is the emulator's gRPC address (or $CLOUD_TASKS_EMULATOR_HOST), RECEIVER_URL the
// URL the task POSTs to (or $RECEIVER_URL). Project and location come from
// $CLOUD_TASKS_PROJECT and $CLOUD_TASKS_LOCATION (default local-project, us-central1).
// Prints one JSON line with what the client saw and exits 0; on any error prints it, exits 1.
// Run by tests/emulator/test_node_client.py.

import { CloudTasksClient } from '@google-cloud/tasks';
import * as grpc from '@grpc/grpc-js';

const target = process.argv[2] || process.env.CLOUD_TASKS_EMULATOR_HOST;
const receiverUrl = process.argv[3] || process.env.RECEIVER_URL;
const queueId = process.argv[4] || `node-client-${Date.now()}`;
const project = process.env.CLOUD_TASKS_PROJECT || 'local-project';
const location = process.env.CLOUD_TASKS_LOCATION || 'us-central1';

if (!target || !receiverUrl) {
  console.error('usage: node client.mjs HOST:PORT RECEIVER_URL [QUEUE_ID]');
  process.exit(2);
}
const sep = target.lastIndexOf(':');
const host = target.slice(0, sep);
const port = Number(target.slice(sep + 1));

// Plaintext gRPC and no Google credentials: sslCreds replaces the TLS + OAuth channel
// credentials, and an explicit universeDomain keeps google-auth-library from looking for
// Application Default Credentials (or the GCE metadata server) at all.
const client = new CloudTasksClient({
  apiEndpoint: host,
  port,
  sslCreds: grpc.credentials.createInsecure(),
  universeDomain: 'googleapis.com',
});

async function main() {
  const parent = client.locationPath(project, location);
  const queuePath = client.queuePath(project, location, queueId);

  const [created] = await client.createQueue({ parent, queue: { name: queuePath } });
  const [got] = await client.getQueue({ name: queuePath });
  const [queues] = await client.listQueues({ parent });

  // Paused while we look at the task, so it cannot be dispatched (and deleted) before
  // getTask and listTasks see it; resumed at the end to have it delivered.
  const [paused] = await client.pauseQueue({ name: queuePath });

  const body = { hello: 'from node', queue: queueId };
  const [task] = await client.createTask({
    parent: queuePath,
    task: {
      httpRequest: {
        httpMethod: 'POST',
        url: receiverUrl,
        headers: { 'Content-Type': 'application/json', 'X-Node-Client': 'yes' },
        body: Buffer.from(JSON.stringify(body)),
        oidcToken: { serviceAccountEmail: 'node-client@local-project.iam.gserviceaccount.com' },
      },
    },
  });
  const [gotTask] = await client.getTask({ name: task.name });
  const [tasks] = await client.listTasks({ parent: queuePath });
  const [resumed] = await client.resumeQueue({ name: queuePath });

  console.log(JSON.stringify({
    queue: created.name,
    queueState: created.state,
    getQueue: got.name,
    listQueues: queues.length,
    queueListed: queues.some((q) => q.name === queuePath),
    pausedState: paused.state,
    resumedState: resumed.state,
    task: task.name,
    taskUrl: task.httpRequest.url,
    taskHasOidc: Boolean(task.httpRequest.oidcToken),
    getTask: gotTask.name,
    listTasks: tasks.length,
    taskListed: tasks.some((t) => t.name === task.name),
    body,
  }));
}

try {
  await main();
  await client.close();
  process.exit(0);
} catch (err) {
  console.error(`node client failed: ${err && err.stack ? err.stack : err}`);
  if (err && err.code !== undefined) {
    console.error(`gRPC status ${err.code}: ${err.details ?? err.message}`);
  }
  process.exit(1);
}
