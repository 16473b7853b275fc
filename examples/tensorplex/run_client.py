"""The client half of Tensorplex's demo on rayplex: 45 clients in four groups, 900 scalars each.

It mirrors Tensorplex's ``examples/run_client.py`` (github.com/StanfordVL/Tensorplex) call for
call; only the import line differs. Start ``run_server.py`` first (or within a minute after:
the first client waits for the server's hub). The process exits by itself when the script
ends, with everything it logged flushed.
"""

import math

from rayplex.compat.tensorplex import TensorplexClient

PORT = 8008


def plot(client, shift):
    x = math.pi / 200
    for i in range(0, 300):
        v1 = math.sin(x * i + math.pi * shift) * (1 + shift)
        v2 = math.sin(x * i + math.pi * shift) * (1 + shift) * math.exp(i / 200)
        v3 = 2 * math.cos(x * i + math.pi * shift) / (1 + shift) * math.exp(-i / 100)
        # a tag that starts with a period opens a section of its own
        client.add_scalar('.my.section/foo', v1, i)
        client.add_scalar('.my.section/bar', v2, i)
        client.add_scalar('mystats', v3, i)
        # add_scalars() is the same as several add_scalar():
        # client.add_scalars({'.my.section/foo': v1, '.my.section/bar': v2, 'mystats': v3}, i)


# normal group: one curve per chart, e.g. system, training and environment statistics
for step, client_name in enumerate(['system', 'training', 'env']):
    client = TensorplexClient(
        client_id='learner/' + client_name,
        host='localhost',
        port=PORT,
    )
    plot(client, 0.1 * step)

# indexed group: 8 agents per chart
for step in range(27):
    agent_id = step
    client = TensorplexClient(
        client_id='agent/' + str(agent_id),
        host='localhost',
        port=PORT,
    )
    plot(client, -0.12 * step)

for step in range(10):
    eval_id = step
    client = TensorplexClient(
        client_id='eval/' + str(eval_id),
        host='localhost',
        port=PORT,
    )
    plot(client, 0.2 * step)

# combined group: the server's get_ablation_bin_name puts the curves together
for step, client_name in enumerate(['PPO', 'DDPG', 'DQN', 'ES', 'GA']):
    client = TensorplexClient(
        client_id='ablation/' + client_name,
        host='localhost',
        port=PORT,
    )
    plot(client, 1 * step)

client.print_done()  # flushes; prints the runs written
# client.export_json('json')
