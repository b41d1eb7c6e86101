"""Python client of gistmem, the conversational memory service (gistmem.v1 over gRPC).

    from gistmem_client import GistmemClient, GistmemError

    client = GistmemClient("127.0.0.1:7070")
    session_id = client.create_session(system_prompt="Be brief.").session_id
    with client.chat(session_id) as chat:
        for delta in chat.send("Hello"):
            print(delta, end="", flush=True)
"""

from gistmem_client._stubs import pb
from gistmem_client.chat_session import ChatSession
from gistmem_client.client import GistmemClient
from gistmem_client.errors import GistmemError
from gistmem_client.reply import Reply
from gistmem_client.types import Attachment, Document, Policy, TurnEnd, Usage

__all__ = ["Attachment", "ChatSession", "Document", "GistmemClient", "GistmemError", "Policy",
           "Reply", "TurnEnd", "Usage", "pb"]
