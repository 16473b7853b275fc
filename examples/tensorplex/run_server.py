"""The server half of Tensorplex's demo on rayplex.

It mirrors Tensorplex's ``examples/run_server.py`` (github.com/StanfordVL/Tensorplex) call for
call; only the import line differs, and the folder is cleared only if no live hub owns it.
Run it in one terminal, then ``run_client.py`` in another:

    python examples/tensorplex/run_server.py     # blocks; Ctrl-C flushes and stops
    python examples/tensorplex/run_client.py
    tensorboard --logdir ~/Temp/tensorplex/ --port 8009

Both join the Ray cluster of this machine (or ``RAY_ADDRESS``); host and port are ignored.
"""

import os
import shutil

from rayplex.compat.tensorplex import Tensorplex, live_owner

PORT = 8008
TB_FOLDER = '~/Temp/tensorplex/'

# start from an empty folder, as the original does -- unless a live hub owns it: a server
# restarted after a crash finds its hub (detached) and its clients still writing there, and
# joins them; deleting the folder under them would lose everything they write
owner = live_owner(TB_FOLDER)
if owner is None:
    shutil.rmtree(os.path.expanduser(TB_FOLDER), ignore_errors=True)
else:
    print(f"{TB_FOLDER} belongs to the running experiment {owner!r}: kept, and joined")
os.makedirs(os.path.expanduser(TB_FOLDER), exist_ok=True)


tplex = Tensorplex(
    TB_FOLDER,
    max_processes=4,
)


def get_ablation_bin_name(tag):
    if tag in ['PPO', 'DDPG', 'DQN']:
        return 'RL'
    else:
        return 'Evolution'


(tplex
    .register_normal_group('learner')
    .register_indexed_group('agent', 8)
    .register_indexed_group('eval', 4)
    .register_combined_group('ablation', get_ablation_bin_name)
 )

tplex.start_server(port=PORT)
