"""RongCloud's own Python server SDK (PyPI `rongcloud`) against Switchboard's gateway: the
SDK's API host is pointed at the gateway, nothing else changes. Effects are checked with an
MQTT device (paho + the IM protobuf classes, as in im_client.py).

Usage: rongcloud_sdk.py --http-port P --mqtt-port M --proto-dir DIR --app-key K --app-secret S
Prints `ok ...` per check and `N passed, M failed` at the end.
"""

import argparse
import json
import sys

import im_client
from im_client import Device, check, RESULTS

from rongcloud import RongCloud
from rongcloud.base import RongCloudBase


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--mqtt-port", type=int, required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--app-key", required=True)
    ap.add_argument("--app-secret", required=True)
    a = ap.parse_args()
    im_client.load_proto(a.proto_dir)
    pb = im_client.pb
    # The only change an app server makes: the API host.
    RongCloudBase.api_host = f"http://127.0.0.1:{a.http_port}"
    rc = RongCloud(a.app_key, a.app_secret)

    r = rc.User.getToken(userId="alice", name="Alice", portraitUri="http://x/a.png")
    check("getToken answers code 200 with the userId", r.status == 200 and r.result.get("code") == 200
          and r.result.get("userId") == "alice", r.result)
    r = rc.User.getToken(userId="bob", name="Bob", portraitUri="")
    token = r.result.get("token", "")
    check("getToken gives a token", bool(token), r.result)

    r = rc.User.checkOnline(userId="bob")
    check("checkOnline: bob offline -> status 0", r.result.get("status") == "0", r.result)
    bob = Device(a.mqtt_port, "bob-phone", token, username="bob")
    check("bob logs in with the SDK's token: CONNACK 0x00", bob.rc == 0, bob.rc)
    r = rc.User.checkOnline(userId="bob")
    check("checkOnline: bob online -> status 1",
          r.result.get("status") == "1", r.result)

    r = rc.Message.publishPrivate(fromUserId="alice", toUserId={"bob"}, objectName="RC:TxtMsg",
                                  content=json.dumps({"content": "hello from RongCloud's SDK",
                                                      "extra": ""}),
                                  pushContent="hi")
    check("publishPrivate answers code 200", r.result.get("code") == 200, r.result)
    m = bob.event("message")
    check("bob's device receives the text from alice",
          m is not None and m.content.text.text == "hello from RongCloud's SDK"
          and getattr(m, "from") == "alice", m)

    r = rc.Message.publishPrivate(fromUserId="alice", toUserId={"bob"}, objectName="App:Order",
                                  content=json.dumps({"order": 42}))
    m = bob.event("message")
    check("a custom object name arrives as a custom type with its JSON",
          m is not None and m.content.custom.type == "App:Order"
          and json.loads(m.content.custom.data) == {"order": 42}, m)

    # The SDK (2.0.1) spells this one with a capital P.
    r = rc.Message.PublishSystem(fromUserId="admin", toUserId={"bob"}, objectName="RC:TxtMsg",
                                 content=json.dumps({"content": "system notice"}))
    check("publishSystem answers code 200", r.result.get("code") == 200, r.result)
    m = bob.event("message")
    check("the system notice arrives in bob's system conversation",
          m is not None and m.conversation.startswith("s:") and m.content.text.text == "system notice", m)

    r = rc.Message.publishPrivate(fromUserId="alice", toUserId={"bob"}, objectName="RC:TxtMsg",
                                  content="not json")
    check("bad content -> HTTP 400, code 1002", r.status == 400 and r.result.get("code") == 1002, r.result)

    r = rc.User.block(userId="bob", minute="10")
    check("block answers code 200", r.result.get("code") == 200, r.result)
    k = bob.event("kicked")
    check("the blocked user's device is signed out", k is not None, k)
    r = rc.User.unBlock(userId="bob")
    check("unblock answers code 200", r.result.get("code") == 200, r.result)

    # Blacklist: bob blacklists alice; her messages to him are refused, the list shows her.
    bob = Device(a.mqtt_port, "bob-phone-2", rc.User.getToken(userId="bob", name="Bob",
                                                               portraitUri="").result["token"],
                 username="bob")
    r = rc.User.addBlacklist(userId="bob", blackUserId="alice")
    check("addBlacklist answers code 200", r.result.get("code") == 200, r.result)
    r = rc.User.queryBlacklist(userId="bob")
    check("queryBlacklist lists alice", r.result.get("users") == ["alice"], r.result)
    r = rc.Message.publishPrivate(fromUserId="alice", toUserId={"bob"}, objectName="RC:TxtMsg",
                                  content=json.dumps({"content": "are you there?"}))
    check("a blacklisted sender's message is refused (code 1002)",
          r.status == 400 and r.result.get("code") == 1002, r.result)
    r = rc.User.removeBlacklist(userId="bob", blackUserId="alice")
    r = rc.User.queryBlacklist(userId="bob")
    check("removeBlacklist empties the list", r.result.get("users") == [], r.result)

    # Word filter: a word added through the SDK is masked in what bob receives.
    r = rc.Wordfilter.add(word="badword")
    check("wordfilter add answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Wordfilter.getList()
    check("wordfilter list has the word", {"word": "badword"} in r.result.get("words", []), r.result)
    rc.Message.publishPrivate(fromUserId="alice", toUserId={"bob"}, objectName="RC:TxtMsg",
                              content=json.dumps({"content": "a badword here"}))
    m = bob.event("message")
    check("the filtered word is masked for bob",
          m is not None and "badword" not in m.content.text.text, m)
    r = rc.Wordfilter.delete(word="badword")
    r = rc.Wordfilter.getList()
    check("wordfilter delete removes it", r.result.get("words") == [], r.result)
    # Groups, with ids the app server chooses.
    r = rc.Group.create(userId={"alice", "bob"}, groupId="team-1", groupName="Team")
    check("group create answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Group.queryUser(groupId="team-1")
    ids = sorted(u.get("id") for u in r.result.get("users", []))
    check("group user query lists both members", ids == ["alice", "bob"], r.result)
    r = rc.Message.publishGroup(fromUserId="alice", toGroupId={"team-1"}, objectName="RC:TxtMsg",
                                content=json.dumps({"content": "hello team"}))
    check("publishGroup answers code 200", r.result.get("code") == 200, r.result)
    m = bob.event("message", lambda m: m.conversation == "g:team-1"
                  and m.content.text.text == "hello team")
    check("bob receives the group message", m is not None, m)
    r = rc.Group.addGagUser(userId={"alice"}, groupId="team-1", minute="10")
    check("gag add answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Group.lisGagUser(groupId="team-1")
    check("gag list shows alice", [u.get("userId") for u in r.result.get("users", [])] == ["alice"],
          r.result)
    r = rc.Message.publishGroup(fromUserId="alice", toGroupId={"team-1"}, objectName="RC:TxtMsg",
                                content=json.dumps({"content": "muted?"}))
    check("a gagged member's group message is refused", r.result.get("code") == 1002, r.result)
    r = rc.Group.rollBackGagUser(userId={"alice"}, groupId="team-1")
    r = rc.Group.lisGagUser(groupId="team-1")
    check("gag rollback empties the list", r.result.get("users") == [], r.result)
    r = rc.Group.quit(userId={"bob"}, groupId="team-1")
    check("group quit answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Group.queryUser(groupId="team-1")
    check("bob is gone from the group", [u.get("id") for u in r.result.get("users", [])] == ["alice"],
          r.result)
    r = rc.Group.sync(userId="bob", groupInfo=[("team-3", "Three")])
    check("group sync answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Group.dismiss(userId="alice", groupId="team-1")
    check("group dismiss answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Group.queryUser(groupId="team-1")
    check("a dismissed group is gone (1002)", r.result.get("code") == 1002, r.result)
    # Chatrooms: created by the app server, bob's device joins over MQTT.
    r = rc.Chatroom.create(chatRoomInfo=[("live-1", "Live")])
    check("chatroom create answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Chatroom.query(chatroomId={"live-1"})
    rooms = r.result.get("chatRooms", [])
    check("chatroom query finds it", [x.get("name") for x in rooms] == ["Live"], r.result)
    import importlib
    room_pb = importlib.import_module("switchboard.im.v1.chatroom_pb2")
    joined, code = bob.request("room/join", room_pb.RoomJoinRequest(room="live-1"),
                               room_pb.RoomJoinResponse)
    check("bob's device joins the room over MQTT", code == 0 and joined.status.code == 0,
          (code, joined))
    r = rc.Chatroom.queryUser(chatroomId="live-1", count="10", order="1")
    check("chatroom user query lists bob",
          [u.get("id") for u in r.result.get("users", [])] == ["bob"], r.result)
    r = rc.Chatroom.addGagUser(userId={"bob"}, chatroomId="live-1", minute="5")
    check("chatroom gag add answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Chatroom.ListGagUser(chatroomId="live-1")
    check("chatroom gag list shows bob",
          [u.get("userId") for u in r.result.get("users", [])] == ["bob"], r.result)
    r = rc.Chatroom.rollbackGagUser(userId={"bob"}, chatroomId="live-1")
    r = rc.Chatroom.ListGagUser(chatroomId="live-1")
    check("chatroom gag rollback empties it", r.result.get("users") == [], r.result)
    r = rc.Chatroom.stopDistributionMessage(chatroomId="live-1")
    check("stopDistribution answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Chatroom.resumeDistributionMessage(chatroomId="live-1")
    check("resumeDistribution answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Chatroom.destroy(chatroomId={"live-1"})
    check("chatroom destroy answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Chatroom.query(chatroomId={"live-1"})
    check("a destroyed chatroom is gone (1002)", r.result.get("code") == 1002, r.result)
    bob.close()

    later_endpoints(rc, a)

    bad = RongCloud(a.app_key, "wrong-secret")
    r = bad.User.getToken(userId="mallory", name="M", portraitUri="")
    check("a wrong secret -> HTTP 401, code 1004", r.status == 401 and r.result.get("code") == 1004, r.result)

    bob.close()
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    sys.exit(1 if RESULTS["failed"] else 0)


def later_endpoints(rc, a):
    """Block query, broadcast, the hourly history file, server-side chatroom join, message
    priority, push tags and /push.json, each through the SDK's own method."""
    import datetime
    import importlib
    import io
    import urllib.request
    import zipfile

    def token(user):
        return rc.User.getToken(userId=user, name=user, portraitUri="").result["token"]

    bob = Device(a.mqtt_port, "bob-phone-3", token("bob"), username="bob")
    alice = Device(a.mqtt_port, "alice-phone", token("alice"), username="alice")

    rc.User.getToken(userId="carol", name="Carol", portraitUri="")
    rc.User.block(userId="carol", minute="30")
    r = rc.User.queryBlock()
    users = r.result.get("users", [])
    check("queryBlock lists carol with a Beijing end time",
          [u.get("userId") for u in users] == ["carol"]
          and len(users[0].get("blockEndTime", "")) == 19, r.result)
    rc.User.unBlock(userId="carol")
    r = rc.User.queryBlock()
    check("queryBlock is empty after unblock", r.result.get("users") == [], r.result)

    r = rc.Message.broadcast(fromUserId="alice", objectName="RC:TxtMsg",
                             content=json.dumps({"content": "to everyone"}), pushContent="news")
    check("broadcast answers code 200", r.result.get("code") == 200, r.result)
    m = bob.event("message", lambda m: m.conversation == "b:all")
    check("bob's device receives the broadcast",
          m is not None and m.content.text.text == "to everyone", m)

    # History: this hour's file (and the previous hour's, should the test cross an hour).
    now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=8)
    records = []
    for t in (now - datetime.timedelta(hours=1), now):
        date = t.strftime("%Y%m%d%H")
        r = rc.Message.getHistory(date=date)
        check(f"history {date} answers code 200 and the date",
              r.result.get("code") == 200 and r.result.get("date") == date, r.result)
        url = r.result.get("url", "")
        if not url:
            continue
        data = urllib.request.urlopen(url, timeout=30).read()
        z = zipfile.ZipFile(io.BytesIO(data))
        for line in z.read(z.namelist()[0]).decode("utf-8").splitlines():
            records.append(json.loads(line[20:]))
    check("the history file holds alice's first text to bob",
          any(x["classname"] == "RC:TxtMsg" and x["content"].get("content") == "hello from RongCloud's SDK"
              and x["fromUserId"] == "alice" and x["targetType"] == 1 for x in records),
          records[:3])
    check("... the custom message with its JSON",
          any(x["classname"] == "App:Order" and x["content"] == {"order": 42} for x in records),
          [x["classname"] for x in records])
    r = rc.Message.getHistory(date="2014010101")
    check("an hour without messages -> an empty url",
          r.result.get("code") == 200 and r.result.get("url") == "", r.result)
    r = rc.Message.getHistory(date="2014133301")
    check("a malformed date -> 1002", r.result.get("code") == 1002, r.result)

    # Chatroom join from the server: bob's online device becomes a member.
    rc.Chatroom.create(chatRoomInfo=[("live-2", "Live 2")])
    r = rc.Chatroom.join(userId={"bob"}, chatroomId="live-2")
    check("chatroom join answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Chatroom.queryUser(chatroomId="live-2", count="10", order="1")
    check("bob's device is in the room after the server's join",
          [u.get("id") for u in r.result.get("users", [])] == ["bob"], r.result)
    # Whitelist and blocks of the room, through the SDK's own methods.
    r = rc.Chatroom.addWhiteListUser(chatroomId="live-2", userId={"alice"})
    check("chatroom whitelist add answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Chatroom.addBlockUser(userId={"bob"}, chatroomId="live-2", minute="10")
    check("chatroom block add answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Chatroom.queryUser(chatroomId="live-2", count="10", order="1")
    check("the blocked user is out of the room", r.result.get("users") == [], r.result)
    r = rc.Chatroom.getListBlockUser(chatroomId="live-2")
    users = r.result.get("users", [])
    check("chatroom block list names bob with a Beijing end time",
          r.result.get("code") == 200 and [u.get("userId") for u in users] == ["bob"]
          and len(users[0].get("time", "")) == 19, r.result)
    r = rc.Chatroom.rollbackBlockUser(userId={"bob"}, chatroomId="live-2")
    check("chatroom block rollback answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Chatroom.getListBlockUser(chatroomId="live-2")
    check("the block list is empty after the rollback", r.result.get("users") == [], r.result)
    r = rc.Chatroom.getListBlockUser(chatroomId="no-such-room")
    check("the block list of an unknown room -> 1002", r.result.get("code") == 1002, r.result)
    r = rc.Chatroom.join(userId={"bob"}, chatroomId="no-such-room")
    check("joining an unknown room -> 1002", r.result.get("code") == 1002, r.result)
    r = rc.Chatroom.addPriority(objectName={"RC:TxtMsg", "RC:ImgMsg"})
    check("priority add answers code 200", r.result.get("code") == 200, r.result)
    r = rc.Chatroom.addPriority(objectName={"A:1", "A:2", "A:3", "A:4", "A:5", "A:6"})
    check("more than 5 types per call -> 1002", r.result.get("code") == 1002, r.result)

    # Tags and /push.json: the audience is resolved from the tags.
    r = rc.Push.setUserPushTag(userTag={"userId": "bob", "tags": ["vip", "beijing"]})
    check("setUserPushTag answers code 200", r.result.get("code") == 200, r.result)
    rc.Push.setUserPushTag(userTag={"userId": "alice", "tags": ["beijing"]})
    r = rc.Push.setUserPushTag(userTag={"userId": "bob", "tags": ["x" * 41]})
    check("a tag over 40 bytes -> 1002", r.result.get("code") == 1002, r.result)
    stored = {"content": json.dumps({"content": "vip offer"}), "objectName": "RC:TxtMsg"}
    r = rc.Push.broadcastPush(pushMessage={
        "platform": ["ios", "android"], "fromuserid": "alice",
        "audience": {"tag": ["vip", "beijing"], "is_to_all": False},
        "message": stored, "notification": {"alert": "offer"}})
    check("push to tags vip AND beijing answers code 200 with an id",
          r.result.get("code") == 200 and r.result.get("id"), r.result)
    m = bob.event("message", lambda m: m.content.text.text == "vip offer")
    check("bob (vip, beijing) receives the pushed message in his system conversation",
          m is not None and m.conversation.startswith("s:"), m)
    r = rc.Push.broadcastPush(pushMessage={
        "platform": ["android"], "fromuserid": "alice",
        "audience": {"tag_or": ["beijing", "shanghai"]},
        "message": {"content": json.dumps({"content": "city news"}), "objectName": "RC:TxtMsg"},
        "notification": {"alert": "news"}})
    m = alice.event("message", lambda m: m.conversation.startswith("s:"))
    check("alice (beijing only) got the tag_or push and not the vip one first",
          m is not None and m.content.text.text == "city news", m)
    r = rc.Push.broadcastPush(pushMessage={
        "platform": ["ios"], "audience": {"userid": ["bob"]},
        "notification": {"alert": "ping", "ios": {"title": "Hi"}}})
    check("a notification-only push to a user answers code 200", r.result.get("code") == 200,
          r.result)
    r = rc.Push.broadcastPush(pushMessage={
        "platform": ["ios"], "audience": {"is_to_all": True}, "notification": {"alert": "x"}})
    check("a notification-only push to everyone is refused (1002)",
          r.status == 400 and r.result.get("code") == 1002, r.result)
    bob.close()
    alice.close()


if __name__ == "__main__":
    main()
