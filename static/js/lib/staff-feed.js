// The staff pages' live view of the rooms: Socket.IO namespace /staff. UI-free: the page
// module hears each live room's summary (`onSession`), whether the feed is live
// (`onLive`), and a sign-out from anywhere (`onSignedOut`). The session cookie signs the
// connection in; with several servers, each room's changes reach every staff page.

import { io } from "/vendor/socket.io.esm.min.js";

export class StaffFeed {
  constructor({ onSession, onLive, onSignedOut }) {
    this.onSession = onSession;
    this.onLive = onLive;
    this.onSignedOut = onSignedOut;
    this.socket = null;
  }

  start() {
    const socket = io("/staff", {
      transports: ["websocket"],
      reconnectionDelay: 1000,
      reconnectionDelayMax: 10000,
    });
    this.socket = socket;
    socket.on("connect", () => this.onLive(true));
    socket.on("disconnect", () => this.onLive(false));
    socket.on("connect_error", (err) => {
      this.onLive(false);
      if (err && err.data && err.data.code === "unauthorized") {
        socket.disconnect(); // signed out: the list's next fetch goes to the sign-in page
      }
    });
    socket.on("session", (summary) => {
      if (summary && typeof summary.id === "string") {
        this.onSession(summary);
      }
    });
    socket.on("closed", (info) => {
      if (info && info.reason === "signed_out") {
        socket.disconnect();
        this.onSignedOut();
      }
    });
  }
}
