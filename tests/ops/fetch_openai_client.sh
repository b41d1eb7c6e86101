#!/usr/bin/env bash
# Installs the official OpenAI Node client from npm (pinned) into DEST/node_modules, for
# openai_client_test. Version 4.x runs on Debian 12's Node.js 18 as on newer ones.
set -euo pipefail
dest=${1:?usage: fetch_openai_client.sh DEST}
want=openai@4.104.0
mkdir -p "$dest"
if [[ ! -f $dest/node_modules/openai/package.json ]] ||
   [[ $(node -p "require('$dest/node_modules/openai/package.json').version") != "${want#openai@}" ]]; then
  npm install --silent --no-audit --no-fund --no-save --prefix "$dest" "$want"
fi
echo "openai client $(node -p "require('$dest/node_modules/openai/package.json').version") in $dest"
