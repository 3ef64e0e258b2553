// What the operator typed once per tab: their name and the API token (sessionStorage, so it is
// gone with the tab). The alarms view's acknowledgements and the rollouts panel both use the token.
export const session = {
  get by() {
    return sessionStorage.getItem("citymeter.by") ?? ""
  },
  set by(v: string) {
    sessionStorage.setItem("citymeter.by", v)
  },
  get token() {
    return sessionStorage.getItem("citymeter.token") ?? ""
  },
  set token(v: string) {
    sessionStorage.setItem("citymeter.token", v)
  },
}
